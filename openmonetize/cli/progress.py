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
    """Where a `send` stands; `bytes_read` drives the ETA (a file's size is known, its line count is not)."""

    lines: int = 0
    bytes_read: int = 0
    delivered: int = 0
    invalid: int = 0
    failed: int = 0


class Reporter(Protocol):
    def update(self, counts: Counts) -> None: ...
    def close(self, counts: Counts) -> None: ...


def reporter(console: Console, total_bytes: int | None, label: str) -> Reporter:
    return LiveBar(console, total_bytes, label) if console.is_terminal else PlainLines(console, total_bytes, label)


def _rate(lines: int, started: float) -> float:
    elapsed = time.monotonic() - started
    return lines / elapsed if elapsed > 0 else 0.0


class LiveBar:
    """One line that fits 80 columns: bar, share of the input read, lines, delivery rate, ETA."""

    def __init__(self, console: Console, total_bytes: int | None, label: str) -> None:
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),
            TaskProgressColumn(),
            TextColumn("{task.fields[lines]:,} lines, {task.fields[delivered]:,} delivered"
                       " ({task.fields[rate]:,.0f}/s)"),
            TextColumn("ETA"),
            TimeRemainingColumn(compact=True),
            console=console,
            transient=False,
        )
        self.task: TaskID = self.progress.add_task(label, total=total_bytes, lines=0, rate=0.0, delivered=0)
        self.progress.start()

    def update(self, counts: Counts) -> None:
        self.progress.update(self.task, completed=counts.bytes_read, lines=counts.lines, delivered=counts.delivered,
                             rate=_rate(counts.delivered or counts.lines, self.started))

    def close(self, counts: Counts) -> None:
        self.update(counts)
        self.progress.stop()


class PlainLines:
    def __init__(self, console: Console, total_bytes: int | None, label: str) -> None:
        self.console = console
        self.total = total_bytes
        self.label = label
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
            share = f" ({min(counts.bytes_read / self.total, 1.0):.0%})"
            if counts.bytes_read and counts.bytes_read < self.total:
                left = elapsed * (self.total - counts.bytes_read) / counts.bytes_read
                eta = f", ETA {timedelta(seconds=round(left))}"
        rate = _rate(counts.delivered or counts.lines, self.started)
        return (f"{self.label}: {counts.lines:,} lines read{share}, {counts.delivered:,} delivered ({rate:,.0f}/s),"
                f" {counts.invalid:,} invalid{eta}")
