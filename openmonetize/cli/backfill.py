"""The engine of `openmonetize send`: read, validate, track, wait for room, count, summarize.

The file is the durable copy: nothing is spooled. Every line gets a stable event id (its own, or one
derived from its number and content, see `jsonl.derive_event_id`), so after an interruption, an outage
or a crash the same command is simply run again: what already arrived comes back as duplicates and is
not billed twice. Memory stays bounded however long the file: lines are streamed, and reading waits
while the delivery client holds a full window of unconfirmed events, so its queue never fills (a full
queue is where the client would drop events).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import queue
import stat
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from openmonetize.cli.common import OK, PARTIAL_FAILURE, Interrupted, display_url, interruptible
from openmonetize.cli.jsonl import Invalid, id_namespace, parse_line_json, read_lines
from openmonetize.cli.progress import Counts, Reporter, reporter

if TYPE_CHECKING:
    from rich.console import Console

    from openmonetize.lib.client import OpenMonetize
    from openmonetize.lib.failures import DeliveryFailure

CHUNK = 1000  # lines tracked between two looks at the client's backlog
WINDOW = 10_000  # unconfirmed events allowed in the client (its max_queue_size): ten batches ahead
GRACE = 5.0  # seconds to deliver what was already read after an interruption
SHOWN_INVALID = 10  # invalid lines printed on stderr; all of them go to the rejects file


class _GiveUp(Exception):
    """Delivery cannot go on (the key is refused, or the service confirmed nothing for too long)."""


class Rejects:
    """The rejects file, created (replacing an earlier one) at the first rejected line only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: IO[str] | None = None

    def write(self, invalid: Invalid) -> None:
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8")
        self._file.write(invalid.to_json() + "\n")
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Sender:
    """One run of `send`: reads, validates, tracks, waits for room, and counts what happened."""

    def __init__(self, om: OpenMonetize | None, namespace: str, rejects: Rejects, console: Console) -> None:
        self.om = om
        self.namespace = id_namespace(namespace)
        self.rejects = rejects
        self.console = console
        self.counts = Counts()
        self.valid = 0
        self.last_line = 0
        self.refused = 0  # refused by the service, one by one or by batch (written to the rejects file)
        self.key_refused = False
        self.paused: str | None = None  # the reason delivery paused (a refused key or account)
        self.timeout = math.inf
        self._failures: queue.SimpleQueue[DeliveryFailure] = queue.SimpleQueue()
        self._lines_of: dict[str, int] = {}  # event id -> line number, of the events tracked last
        self._resolved = 0
        self._progress_at = time.monotonic()
        # (valid lines tracked, input offset) every CHUNK valid lines: the service has answered for the input
        # up to the offset of the last mark it has answered for (batches go out in order)
        self._marks: collections.deque[tuple[int, int]] = collections.deque()

    def on_error(self, failure: DeliveryFailure) -> None:
        """The delivery client's report (on its thread): handled on the main thread, in `_absorb`."""
        self._failures.put(failure)

    # -- reading ---------------------------------------------------------------------------------------

    def read(self, stream: IO[bytes], report: Reporter) -> None:
        om, namespace, counts = self.om, self.namespace, self.counts
        lines_of = self._lines_of
        for number, raw, position in read_lines(stream):
            counts.lines += 1
            counts.bytes_read = position
            self.last_line = number
            event = parse_line_json(raw, number, namespace)
            if type(event) is Invalid:
                self._invalid(event)
                continue
            self.valid += 1
            if om is None:
                counts.acknowledged_bytes = position  # checked is all a dry run does
                if self.valid % CHUNK == 0:
                    report.update(counts)
                continue
            if self.valid % CHUNK == 1:
                self._wait_for_room(report)
            lines_of[om._enqueue_json(*event)] = number  # type: ignore[misc]  # what `track` of the model queues
            if self.valid % CHUNK == 0:
                self._marks.append((self.valid, position))
            if len(lines_of) > 2 * WINDOW:  # keep the newest half: the unconfirmed events are among them
                recent = list(lines_of.items())[-WINDOW:]
                lines_of.clear()
                lines_of.update(recent)
        report.update(counts)

    def _invalid(self, invalid: Invalid) -> None:
        self.counts.invalid += 1
        self.rejects.write(invalid)
        if self.counts.invalid <= SHOWN_INVALID:
            self.console.print(f"line {invalid.line}: {invalid.reason}", markup=False, soft_wrap=True)

    # -- delivery --------------------------------------------------------------------------------------

    def _wait_for_room(self, report: Reporter) -> None:
        """Back-pressure: read on only while the client's backlog leaves room for a whole chunk.

        The client's queue then never reaches its `max_queue_size`, so `track` never waits or drops.
        """
        assert self.om is not None
        while True:
            queued = self._absorb()
            report.update(self.counts)
            if queued + CHUNK < WINDOW:
                return
            time.sleep(0.01)

    def drain(self, report: Reporter) -> None:
        """After the last line: wait until every tracked event is confirmed or reported."""
        assert self.om is not None
        while not self.om.flush(0.25):
            self._absorb()
            report.update(self.counts)
        self._absorb()
        report.update(self.counts)

    def _absorb(self) -> int:
        """Take in the client's counters and reports; returns its backlog. Raises `_GiveUp`."""
        assert self.om is not None
        while True:
            try:
                failure = self._failures.get_nowait()
            except queue.Empty:
                break
            if failure.kind in ("rejected", "unconfirmed"):
                self._refused(failure)
            elif failure.kind == "paused":  # the key or the account: nothing will move until someone fixes it
                self.key_refused = failure.status == 401
                self.paused = failure.reason
        stats = self.om.stats()
        resolved = stats["sent"] + stats["duplicates"] + stats["rejected"]
        now = time.monotonic()
        if resolved != self._resolved:
            self._resolved = resolved
            self._progress_at = now
        self.counts.new = stats["sent"]
        self.counts.duplicates = stats["duplicates"]
        self.counts.failed = stats["rejected"]
        self._acknowledge(resolved)
        if self.key_refused:
            raise _GiveUp("the service refused the API key (401): check OPENMONETIZE_API_KEY")
        if self.paused:
            raise _GiveUp(f"delivery paused: {self.paused}")
        if stats["queued"] and now - self._progress_at > self.timeout:
            raise _GiveUp(f"the service confirmed nothing for {self.timeout:g} s")
        return stats["queued"]

    def _acknowledge(self, resolved: int) -> None:
        """Moves `acknowledged_bytes` up to the input the service has answered for (`resolved` events)."""
        counts, marks = self.counts, self._marks
        if resolved >= self.valid:  # every line read so far, invalid ones included, is settled
            counts.acknowledged_bytes = counts.bytes_read
            marks.clear()
            return
        while marks and marks[0][0] <= resolved:
            counts.acknowledged_bytes = marks.popleft()[1]

    def _refused(self, failure: DeliveryFailure) -> None:
        for event in failure.events:
            self.refused += 1
            line = self._lines_of.get(str(event.get("event_id")))  # None: too old to be traced
            original = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
            self.rejects.write(Invalid(line, f"refused by the service: {failure.reason}", original))


def run(source: str, base_url: str, key: str | None, rejects_path: Path, namespace: str, timeout: float,
         console: Console) -> int:
    rejects = Rejects(rejects_path)
    sender = Sender(None, namespace, rejects, console)
    sender.timeout = timeout
    om = None
    if key is not None:
        from openmonetize.lib.client import OpenMonetize

        om = sender.om = OpenMonetize(api_key=key, base_url=base_url, on_error=sender.on_error,
                                      max_queue_size=WINDOW, block_timeout=math.inf, flush_interval=0.2)
    target = "validating only (--dry-run)" if om is None else f"sending to {display_url(base_url)}"
    console.print(f"openmonetize send: {'stdin' if source == '-' else source}, {target}", markup=False)

    interrupted: Interrupted | None = None
    gave_up: str | None = None
    with contextlib.ExitStack() as stack, interruptible():
        stream = sys.stdin.buffer if source == "-" else stack.enter_context(open(source, "rb"))
        report = reporter(console, _size(stream), "reading" if om is None else "sending", sending=om is not None)
        try:
            try:
                sender.read(stream, report)
                if om is not None:
                    sender.drain(report)
            except Interrupted as exc:
                interrupted = exc
                if om is not None:
                    console.print(f"interrupted ({exc}): delivering what was already read for up to {GRACE:g} s"
                                  " (signal again to stop at once)", markup=False)
            except _GiveUp as exc:
                gave_up = str(exc)
            if om is not None:
                try:
                    om.shutdown(GRACE if interrupted else 0.0 if gave_up else 10.0)
                except Interrupted as exc:  # a signal during the final flush: what is left is resent next time
                    interrupted = interrupted or exc
                with contextlib.suppress(_GiveUp):
                    sender._absorb()
        finally:
            report.close(sender.counts)
            rejects.close()
    return _summary(sender, om, interrupted, gave_up)


def _size(stream: IO[bytes]) -> int | None:
    """A regular file's size, for the ETA; None for a pipe or a terminal."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _summary(sender: Sender, om: OpenMonetize | None, interrupted: Interrupted | None, gave_up: str | None) -> int:
    counts = sender.counts
    rows: list[tuple[str, int, str]] = [("read", counts.lines, "lines")]
    if om is None:
        rows.append(("valid", sender.valid, "lines (nothing sent: --dry-run)"))
        failed = 0
    else:
        stats = om.stats()
        failed = sender.valid - stats["sent"] - stats["duplicates"]
        rows += [
            ("sent", stats["sent"], "new events accepted"),
            ("duplicates", stats["duplicates"], "already delivered (same event_id): not billed again"),
        ]
    where = f", written to {sender.rejects.path}" if sender.rejects.count else ""
    rows.append(("invalid", counts.invalid, f"lines, not sent{where}"))
    if om is not None:
        detail = []
        if sender.refused:
            detail.append(f"{sender.refused:,} refused by the service{where}")
        if failed - sender.refused:
            detail.append(f"{failed - sender.refused:,} not delivered")
        rows.append(("failed", failed, "; ".join(detail)))
    click.echo("summary")
    for name, value, note in rows:
        click.echo(f"  {name:<11}{value:>12,}  {note}".rstrip())
    if counts.invalid > SHOWN_INVALID:
        click.echo(f"{counts.invalid - SHOWN_INVALID:,} more invalid lines than shown above: see {sender.rejects.path}",
                   err=True)
    if interrupted is not None:
        click.echo(f"interrupted after line {sender.last_line:,}: run the same command again to send the rest;"
                   " what already arrived is dropped as a duplicate, not billed twice", err=True)
        return interrupted.exit_code
    if gave_up is not None:
        click.echo(f"stopped: {gave_up}; run the same command again to resume (lines already delivered are"
                   " not billed twice)", err=True)
        return PARTIAL_FAILURE
    return PARTIAL_FAILURE if counts.invalid or failed else OK
