"""`openmonetize spool status|replay|export DIR`: look into a durable spool, deliver it, or dump it.

`status` and `export` only read: a live process's file is never locked, written or checkpointed.
`replay` delivers through `OpenMonetize(spool_dir=DIR)`, which adopts the files of dead processes (a
live process delivers its own file) and keeps on disk whatever it could not deliver.
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
from openmonetize.lib.buffers import SpoolFile, inspect_spool, read_spool

if TYPE_CHECKING:
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
    """What the spool holds: files, events, oldest and newest event, bytes on disk.

    Read-only. A file is "live" while its process runs (that process delivers it) and "orphaned" once the
    process is gone (the next client opening the directory, or `spool replay`, delivers it).
    """
    files = _inspect(directory)
    if as_json:
        click.echo(json.dumps([{**asdict(f), "path": str(f.path)} for f in files], indent=2))
        return
    if not files:
        click.echo(f"no spool files in {directory}: nothing waiting")
        return
    table = Table(title=f"Spool {directory}", title_justify="left")
    for name, justify in (("file", "left"), ("state", "left"), ("events", "right"), ("oldest event", "left"),
                          ("newest event", "left"), ("bytes", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for f in files:
        table.add_row(f.path.name, "live" if f.live else "orphaned", f"{f.events:,}", f.oldest or "",
                      f.newest or "", f"{f.bytes:,}")
    if len(files) > 1:
        table.add_section()
        table.add_row(f"{len(files)} files", "", f"{sum(f.events for f in files):,}",
                      min((f.oldest for f in files if f.oldest), default=""),
                      max((f.newest for f in files if f.newest), default=""), f"{sum(f.bytes for f in files):,}")
    stdout_console().print(table)


@spool.command()
@click.argument("directory", metavar="DIR", type=_SPOOL_DIR)
@click.option("--out", type=click.File("wb", lazy=True), default="-", metavar="PATH",
              help="Write here instead of stdout.")
@click.option("--orphans-only", is_flag=True, help="Leave out the files of live processes.")
def export(directory: Path, out: IO[bytes], orphans_only: bool) -> None:
    """Dump the spooled events as JSON lines, as they will be sent (each with its event_id).

    Read-only: the spool keeps them. The output is valid input for `openmonetize send`, and sending it
    while the spool is also delivered bills nothing twice: the event ids are kept.
    """
    count = 0
    for body in read_spool(directory, include_live=not orphans_only):
        out.write(body + b"\n")
        count += 1
    out.flush()
    click.echo(f"exported {count:,} events", err=True)


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
    orphaned = [f for f in before if not f.live]
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
    left = sum(f.events for f in _inspect(directory) if f.path not in live_paths)
    rows = [
        ("adopted", stats["sent"] + stats["duplicates"] + stats["rejected"] + left, "events from orphaned files"),
        ("sent", stats["sent"], "new events accepted"),
        ("duplicates", stats["duplicates"], "already delivered (same event_id): not billed again"),
        ("refused", stats["rejected"], f"written to {rejects_path}" if stats["rejected"] else ""),
        ("left", left, "still in the spool: run replay again later" if left else ""),
    ]
    if live:
        rows.append(("live", sum(f.events for f in live), f"events in {len(live)} file(s) of running processes,"
                                                            " left to them"))
    click.echo("summary")
    for name, value, note in rows:
        click.echo(f"  {name:<11}{value:>12,}  {note}".rstrip())
    if interrupted:
        sys.exit(130)
    sys.exit(OK if delivered and not stats["rejected"] and not left else PARTIAL_FAILURE)


def _inspect(directory: Path) -> list[SpoolFile]:
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
