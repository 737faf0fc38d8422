"""`openmonetize spool status|replay|export|dead-letters|resend DIR`: look into a durable spool, deliver
it, dump it, and deal with the events the service refused for good.

`status`, `export` and `dead-letters` only read: a live process's file is never locked, written or
checkpointed. `replay` delivers through `OpenMonetize(spool_dir=DIR)`, which adopts the files of dead
processes (a live process delivers its own file) and keeps on disk whatever it could not deliver.
`resend` writes, but only to orphaned files, each locked meanwhile as an adopting client would.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click
from rich.table import Table

from openmonetize.cli.common import (
    OK,
    PARTIAL_FAILURE,
    Interrupted,
    api_key_option,
    base_url_option,
    display_url,
    interruptible,
    log_to,
    require_key,
    stderr_console,
    stdout_console,
)

# (the spool's module, with SQLite, is imported by the commands that read a spool: every command imports this
# module, `openmonetize send` too)
if TYPE_CHECKING:
    from openmonetize.lib.buffers import DeadLetter, SpoolFile
    from openmonetize.lib.client import OpenMonetize
    from openmonetize.lib.failures import DeliveryFailure

_SPOOL_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group()
def spool() -> None:
    """Inspect, deliver or export a durable spool directory (OpenMonetize(spool_dir=...))."""


@spool.command()
@click.argument("directory", metavar="DIR", type=_SPOOL_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print the files as JSON instead of a table.")
def status(directory: Path, as_json: bool) -> None:
    """What the spool holds: files, events, dead letters, oldest and newest event, bytes on disk.

    Read-only. A file is "live" while its process runs (that process delivers it) and "orphaned" once the
    process is gone (the next client opening the directory, or `spool replay`, delivers it). A "corrupt"
    file is salvaged and moved aside ("quarantined") by the next client; "unreadable" is not ours to read.
    """
    files = _inspect(directory)
    if as_json:
        click.echo(json.dumps([{**asdict(f), "path": str(f.path)} for f in files], indent=2))
        return
    if not files:
        click.echo(f"no spool files in {directory}: nothing waiting")
        return
    table = Table(title=f"Spool {directory}", title_justify="left")
    for name, justify in (("file", "left"), ("state", "left"), ("events", "right"), ("dead letters", "right"),
                          ("oldest event", "left"), ("newest event", "left"), ("bytes", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for f in files:
        table.add_row(f.path.name, f.state, f"{f.events:,}", f"{f.dead_letters:,}", f.oldest or "",
                      f.newest or "", f"{f.bytes:,}")
    if len(files) > 1:
        table.add_section()
        table.add_row(f"{len(files)} files", "", f"{sum(f.events for f in files):,}",
                      f"{sum(f.dead_letters for f in files):,}",
                      min((f.oldest for f in files if f.oldest), default=""),
                      max((f.newest for f in files if f.newest), default=""), f"{sum(f.bytes for f in files):,}")
    stdout_console().print(table)
    for f in files:
        if f.problem:
            click.echo(f"{f.path.name}: {f.state}: {f.problem}", err=True)


@spool.command()
@click.argument("directory", metavar="DIR", type=_SPOOL_DIR)
@click.option("--out", type=click.File("wb", lazy=True), default="-", metavar="PATH",
              help="Write here instead of stdout.")
@click.option("--orphans-only", is_flag=True, help="Leave out the files of live processes.")
def export(directory: Path, out: IO[bytes], orphans_only: bool) -> None:
    """Dump the spooled events as JSON lines, as they will be sent (each with its event_id).

    Read-only: the spool keeps them. The output is valid input for `openmonetize send`, and sending it
    while the spool is also delivered bills nothing twice: the event ids are kept. A file SQLite cannot
    read is named on stderr and skipped (exit status 1); the others are exported.
    """
    from openmonetize.lib.buffers import read_spool

    count = 0
    skipped: list[tuple[Path, str]] = []
    for body in read_spool(directory, include_live=not orphans_only, skipped=skipped):
        out.write(body + b"\n")
        count += 1
    out.flush()
    click.echo(f"exported {count:,} events", err=True)
    _exit_if_skipped(skipped)


@spool.command()
@click.argument("directory", metavar="DIR", type=_SPOOL_DIR)
@base_url_option()
@api_key_option("The API key to send with.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              metavar="SECONDS", help="Give up when the service has confirmed nothing for this long; what is"
                                      " left stays in the spool.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Where events the service refuses for good are written (JSON lines, with the reason)."
                   "  [default: DIR.rejects.jsonl, beside the directory]")
def replay(directory: Path, base_url: str, api_key: str | None, timeout: float, rejects_path: Path | None) -> None:
    """Deliver what the spool's dead processes left, now.

    Files of live processes are left to them. Exit status 0 when everything adopted was delivered, 1 when
    some events were refused (written to --rejects) or are still in the spool (run it again later).
    """
    key = require_key(api_key)
    rejects_path = rejects_path or directory.parent / f"{directory.resolve().name}.rejects.jsonl"
    console = stderr_console()
    log_to(console)
    before = _inspect(directory)
    live = [f for f in before if f.live]
    orphaned = [f for f in before if f.state in ("orphaned", "corrupt")]
    console.print(f"openmonetize spool replay: {sum(f.events for f in orphaned):,} events in {len(orphaned)} orphaned"
                  f" file(s), sending to {display_url(base_url)}", markup=False)

    stats = {"sent": 0, "duplicates": 0, "rejected": 0}
    delivered = True
    interrupted = False
    if orphaned:
        from openmonetize.lib.client import OpenMonetize

        failures: queue.SimpleQueue[DeliveryFailure] = queue.SimpleQueue()
        om = OpenMonetize(api_key=key, base_url=base_url, spool_dir=directory, on_error=failures.put,
                          block_timeout=math.inf)
        with interruptible():
            try:
                om.start()  # opens the spool: adopts the orphaned files
                delivered = _deliver(om, timeout)
            except Interrupted:
                interrupted = True
            finally:
                stats = om.stats()
                with contextlib.suppress(Interrupted):
                    om.shutdown(10 if delivered and not interrupted else 0)
        _write_rejects(failures, rejects_path)
    # What is left is what the files hold now, apart from the live processes' (ours included: events in
    # flight stay in the file until acknowledged). Counted on disk: exact, unlike a snapshot of counters.
    live_paths = {f.path for f in live}
    after = [f for f in _inspect(directory) if f.path not in live_paths]
    left = sum(f.events for f in after)
    dead = sum(f.dead_letters for f in after)
    rows = [
        ("adopted", stats["sent"] + stats["duplicates"] + stats["rejected"] + left, "events from orphaned files"),
        ("sent", stats["sent"], "new events accepted"),
        ("duplicates", stats["duplicates"], "already delivered (same event_id): not billed again"),
        ("refused", stats["rejected"], f"written to {rejects_path}" if stats["rejected"] else ""),
        ("left", left, "still in the spool: run replay again later" if left else ""),
    ]
    if dead:
        rows.append(("dead", dead, f"dead letters kept in the spool: openmonetize spool dead-letters {directory}"))
    if live:
        rows.append(("live", sum(f.events for f in live), f"events in {len(live)} file(s) of running processes,"
                                                            " left to them"))
    click.echo("summary")
    for name, value, note in rows:
        click.echo(f"  {name:<11}{value:>12,}  {note}".rstrip())
    if interrupted:
        sys.exit(130)
    sys.exit(OK if delivered and not stats["rejected"] and not left else PARTIAL_FAILURE)


@spool.command("dead-letters")
@click.argument("directory", metavar="DIR", type=_SPOOL_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON instead of a table.")
@click.option("--export", "export_to", type=click.File("wb", lazy=True), metavar="FILE.jsonl",
              help="Write the events as JSON lines instead (as they were sent, event_id kept; '-' for stdout):"
                   " valid input for `openmonetize send`, once fixed.")
@click.option("--event-id", "event_ids", multiple=True, metavar="ID", help="Only this event (repeatable).")
def dead_letters(directory: Path, as_json: bool, export_to: IO[bytes] | None, event_ids: tuple[str, ...]) -> None:
    """The events the service refused for good, kept in the spool: id, kind, status, reason, when, customer.

    Read-only, live processes' files included. `rejected`: the service refused them (a 400, 422 or a 403
    for these events only); `unconfirmed`: it answered 2xx without ever accounting for them. Fix the data
    (or the key, or the account on the service's side), then `openmonetize send` the export or `spool
    resend` them. Exit status 1 when a file could not be read or an --event-id was not found.
    """
    from openmonetize.lib.buffers import read_dead_letters

    skipped: list[tuple[Path, str]] = []
    letters = list(read_dead_letters(directory, event_ids=event_ids or None, skipped=skipped))
    missing = set(event_ids) - {letter.event_id for letter in letters}
    if export_to is not None:
        for letter in letters:
            export_to.write(letter.body + b"\n")
        export_to.flush()
        click.echo(f"exported {len(letters):,} dead letters", err=True)
    elif as_json:
        click.echo(json.dumps([_dead_letter_json(letter) for letter in letters], indent=2))
    elif not letters:
        click.echo(f"no dead letters in {directory}")
    else:
        table = Table(title=f"Dead letters in {directory}: {len(letters):,}", title_justify="left")
        for name in ("event id", "kind", "status", "reason", "when", "customer", "file"):
            table.add_column(name)
        for letter in letters:
            table.add_row(letter.event_id or "", letter.kind, "" if letter.status is None else str(letter.status),
                          letter.reason, letter.dead_at, letter.customer_id or "",
                          letter.path.name + (" (live)" if letter.live else ""))
        stdout_console().print(table)
    for event_id in sorted(missing):
        click.echo(f"no dead letter with event id {event_id}", err=True)
    _exit_if_skipped(skipped, failed=bool(missing))


@spool.command()
@click.argument("directory", metavar="DIR", type=_SPOOL_DIR)
@click.option("--event-id", "event_ids", multiple=True, metavar="ID",
              help="Only this event (repeatable). Default: every dead letter of the orphaned files.")
def resend(directory: Path, event_ids: tuple[str, ...]) -> None:
    """Move dead letters back into the queue, to be delivered again once the data or the key is fixed.

    Only orphaned files are changed (each is locked meanwhile, as an adopting client would): `spool replay
    DIR`, or the next client opening the directory, then delivers them. Files of running processes are left
    alone (run resend again once they have exited). Exit status 1 when some were left alone, a file could not
    be opened or an --event-id was not found.
    """
    from openmonetize.lib.buffers import resend_dead_letters

    result = resend_dead_letters(directory, event_ids=event_ids or None)
    click.echo(f"moved {result.moved:,} dead letters back to the queue of orphaned files"
               + (f"; `openmonetize spool replay {directory}` delivers them" if result.moved else ""))
    if result.live:
        click.echo(f"left alone: {result.live:,} dead letters in {result.live_files} file(s) of running processes;"
                   " run resend again once they have exited")
    missing = set(event_ids) - result.moved_ids - result.live_ids
    for event_id in sorted(missing):
        click.echo(f"no dead letter with event id {event_id}", err=True)
    _exit_if_skipped(result.skipped, failed=bool(missing or result.live))


def _dead_letter_json(letter: DeadLetter) -> dict[str, object]:
    return {"event_id": letter.event_id, "kind": letter.kind, "status": letter.status, "reason": letter.reason,
            "when": letter.dead_at, "customer_id": letter.customer_id, "details": letter.details,
            "file": str(letter.path), "live": letter.live}


def _exit_if_skipped(skipped: list[tuple[Path, str]], *, failed: bool = False) -> None:
    """Name the files that could not be read on stderr; exit 1 (partial) when any, or `failed`."""
    for path, why in skipped:
        click.echo(f"skipped {path.name}: {why}", err=True)
    if skipped or failed:
        sys.exit(PARTIAL_FAILURE)


def _inspect(directory: Path) -> list[SpoolFile]:
    from openmonetize.lib.buffers import inspect_spool

    try:
        return inspect_spool(directory)
    except Exception as exc:  # sqlite3 errors: a file that is not a spool
        raise click.ClickException(f"cannot read the spool in {directory}: {exc}") from None


def _deliver(om: OpenMonetize, timeout: float) -> bool:
    """Flush until everything adopted is confirmed, or nothing was confirmed for `timeout` seconds."""
    progress_at, resolved = time.monotonic(), -1
    while not om.flush(0.25):
        stats = om.stats()
        now = time.monotonic()
        done = stats["sent"] + stats["duplicates"] + stats["rejected"]
        if done != resolved:
            progress_at, resolved = now, done
        elif now - progress_at > timeout:
            return False
    return True


def _write_rejects(failures: queue.SimpleQueue[DeliveryFailure], path: Path) -> int:
    """The events the service refused for good: out of the spool now, so kept here to be fixed and resent."""
    count = 0
    out: IO[str] | None = None
    try:
        while True:
            try:
                failure = failures.get_nowait()
            except queue.Empty:
                break
            if failure.kind != "rejected":
                continue
            if out is None:
                out = path.open("a", encoding="utf-8")
            for event in failure.events:
                out.write(json.dumps({"reason": failure.reason, "status": failure.status, "event": event}) + "\n")
                count += 1
    finally:
        if out is not None:
            out.close()
    return count
