"""Progress of `send`: a live bar on a terminal, plain periodic lines in logs and pipes.

A terminal gets rate and ETA redrawn in place; anything else (CI logs, `nohup`, `2> file`) gets one
line every few seconds, which stays readable there and costs nothing when nobody watches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

PLAIN_INTERVAL = 5.0


@dataclass
class Counts:
    """Where a `send` stands.

    The bar and the ETA follow `acknowledged_bytes`: the share of the input the service has answered for
    (a file's size is known, its line count is not), not what was read, which runs ahead by up to a
    window of unconfirmed events. `new` and `duplicates` are kept apart so that a re-run of a delivered
    file reads "0 new, N duplicates".
    """

    lines: int = 0
    bytes_read: int = 0
    acknowledged_bytes: int = 0
    new: int = 0
    duplicates: int = 0
    invalid: int = 0
    failed: int = 0

    @property
    def delivered(self) -> int:
        """Events the service confirmed (new or already known)."""
        return self.new + self.duplicates


class Reporter(Protocol):
    def update(self, counts: Counts) -> None: ...
    def close(self, counts: Counts) -> None: ...


def reporter(console: Console, total_bytes: int | None, label: str, sending: bool = True) -> Reporter:
    """`sending=False` (--dry-run): progress is what was validated, and nothing is new or a duplicate."""
    kind = LiveBar if console.is_terminal else PlainLines
    return kind(console, total_bytes, label, sending)


def _rate(count: int, started: float) -> float:
    elapsed = time.monotonic() - started
    return count / elapsed if elapsed > 0 else 0.0


def outcome(counts: Counts, sending: bool, rate: float) -> str:
    """What the service answered so far ("0 new, 3,000 duplicates" for a re-run), or what was validated."""
    if not sending:
        return f"{counts.lines:,} lines checked ({rate:,.0f}/s)"
    return f"{counts.new:,} new, {counts.duplicates:,} duplicates ({rate:,.0f}/s)"


class LiveBar:
    """One line that fits 80 columns: the share of the input acknowledged, new and duplicates, rate, ETA."""

    def __init__(self, console: Console, total_bytes: int | None, label: str, sending: bool) -> None:
        self.started = time.monotonic()
        self.sending = sending
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=12),
            TaskProgressColumn(),
            TextColumn("{task.fields[outcome]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(compact=True),
            console=console,
            transient=False,
        )
        self.task: TaskID = self.progress.add_task(label, total=total_bytes, outcome=outcome(Counts(), sending, 0.0))
        self.progress.start()

    def update(self, counts: Counts) -> None:
        done = counts.delivered if self.sending else counts.lines
        self.progress.update(self.task, completed=counts.acknowledged_bytes,
                             outcome=outcome(counts, self.sending, _rate(done, self.started)))

    def close(self, counts: Counts) -> None:
        self.update(counts)
        self.progress.stop()


class PlainLines:
    def __init__(self, console: Console, total_bytes: int | None, label: str, sending: bool) -> None:
        self.console = console
        self.total = total_bytes
        self.label = label
        self.sending = sending
        self.started = self.last = time.monotonic()

    def update(self, counts: Counts) -> None:
        now = time.monotonic()
        if now - self.last >= PLAIN_INTERVAL:
            self.last = now
            self.console.print(self.line(counts), markup=False, soft_wrap=True)

    def close(self, counts: Counts) -> None:
        self.console.print(self.line(counts), markup=False, soft_wrap=True)

    def line(self, counts: Counts) -> str:
        elapsed = time.monotonic() - self.started
        share = eta = ""
        if self.total:
            done = counts.acknowledged_bytes
            share = f", {min(done / self.total, 1.0):.0%} of the input {'acknowledged' if self.sending else 'checked'}"
            if done and done < self.total:
                left = elapsed * (self.total - done) / done
                eta = f", ETA {timedelta(seconds=round(left))}"
        rate = _rate(counts.delivered if self.sending else counts.lines, self.started)
        refused = f", {counts.failed:,} refused" if counts.failed else ""
        read = f", {counts.lines:,} lines read" if self.sending else ""
        invalid = f", {counts.invalid:,} invalid"
        return f"{self.label}: {outcome(counts, self.sending, rate)}{share}{refused}{invalid}{read}{eta}"
