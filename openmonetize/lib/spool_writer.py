"""The spool's group commits, run on a thread of their own so the delivery thread never waits on SQLite.

Every SQLite call releases the GIL; getting it back while a caller thread is busy tracking takes up to
the interpreter's switch interval (5 ms), and a commit also waits for the disk (fsync). Measured on the
delivery thread, those waits, not SQLite's work, made spool mode deliver at ~0.6x memory mode: batches
were not handed out while it waited. Here one thread writes one `WriteJob` at a time, in one
transaction; the delivery thread hands the job over, goes on sending and answering, and picks up the
result (the new groups' row ids, or the error) at its next loop, woken by `notify`.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter

from openmonetize.lib.spool_format import PAGE_SIZE, cut_lengths, group_rows, insert_groups, insert_ranges, transaction

logger = logging.getLogger("openmonetize")

Entry = tuple[int, bytes]
_GROUPS_PER_STATEMENT = 1000  # (5 parameters each: SQLite allows 32766 per statement)
RECLAIM_BYTES = 1 << 20  # the free space is looked at once groups of about this size were deleted
VACUUM_STEP = 8 << 20  # given back per commit, at most
RANGES_PER_STATEMENT = 5000  # (3 each)


@dataclass(eq=False)
class WriteJob:
    """Events to write as groups, and resolved ranges to record (`(row_id, first, last)`, -1 for a whole
    group), in one transaction. Filled in by `run`: the cuts of `rows` into groups and their row ids, or
    the error (then nothing was written)."""

    rows: list[Entry]
    ranges: list[tuple[int, int, int]]
    reclaim: bool = False  # then give free space back after the commit (`give_space_back`)
    reclaimed: bool = False  # ... and it is all given back
    resume: bool = False  # the last job's giving back did not finish: go on, even below half
    seqs: list[int] = field(default_factory=list)  # the rows split (by `write`), reused by the owner
    bodies: list[bytes] = field(default_factory=list)
    cuts: list[tuple[int, int]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    error: sqlite3.Error | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, db: sqlite3.Connection) -> None:
        try:
            write(db, self)
            if self.reclaim:
                try:
                    self.reclaimed = give_space_back(db, resume=self.resume)
                except sqlite3.Error as exc:  # no fault of delivery: tried again later
                    self.reclaimed = True
                    logger.debug("openmonetize: could not give back the spool's free space: %s", exc)
        except sqlite3.Error as exc:
            self.cuts, self.ids, self.error = [], [], exc
        except Exception as exc:  # a bug: nothing was written (rolled back); the owner holds the events
            logger.exception("openmonetize: writing to the spool failed")
            self.cuts, self.ids, self.error = [], [], sqlite3.OperationalError(f"spool writer: {exc!r}")


def group_params(job: WriteJob) -> list[tuple[int, bytes, int, bytes, bytes]]:
    """Split the job's rows (`seqs`, `bodies`, reused by the owner), cut them into groups (`cuts`), and
    return each group's columns (`spool_format.group_rows`)."""
    seqs = job.seqs = list(map(itemgetter(0), job.rows))
    bodies = job.bodies = list(map(itemgetter(1), job.rows))
    lengths = list(map(len, bodies))
    job.cuts = cut_lengths(lengths)
    return group_rows(seqs, bodies, lengths, job.cuts)


def write(db: sqlite3.Connection, job: WriteJob) -> None:
    """The job's writes, in one transaction (BEGIN IMMEDIATE ... COMMIT)."""
    groups = group_params(job)
    ids: list[int] = []
    if not groups and not job.ranges:
        job.ids = ids
        return  # (a job that only gives space back)
    with transaction(db):
        values = [v for resolved in job.ranges for v in resolved]
        for start in range(0, len(values), 3 * RANGES_PER_STATEMENT):
            part = values[start:start + 3 * RANGES_PER_STATEMENT]
            db.execute(insert_ranges(len(part) // 3), part)
        for start in range(0, len(groups), _GROUPS_PER_STATEMENT):
            chunk = groups[start:start + _GROUPS_PER_STATEMENT]
            last = int(db.execute(insert_groups(len(chunk)), [v for group in chunk for v in group]).lastrowid or 0)
            ids += range(last - len(chunk) + 1, last + 1)  # (AUTOINCREMENT, one writer: consecutive ids)
    job.ids = ids


def give_space_back(db: sqlite3.Connection, *, resume: bool = False) -> bool:
    """Once at least half the file is free pages, return them to the file system, `VACUUM_STEP` at a
    time (moving the pages still in use towards the start), then truncate the WAL; True when nothing is
    left to give back. A call that returned False is followed by one with `resume`, which goes on to the
    end even once less than half the file is free (else the last steps, and the WAL's truncation, would
    wait for the next time half of it is free). Waiting for half keeps the moving linear in what is
    written; once the queue is delivered the free pages are at the end of the file, and giving them back
    moves nothing. (Measured against a periodic VACUUM, which copies the whole file each time, and against
    reusing the free pages only, which never shrinks the file: see BENCHMARKS.md, "Spool (issue 14)".)"""
    free, pages = db.execute("SELECT * FROM pragma_freelist_count, pragma_page_count").fetchone()
    if free and (resume or free * 2 >= pages):
        step = min(int(free), VACUUM_STEP // PAGE_SIZE)
        db.executescript(f"PRAGMA incremental_vacuum({step});")  # (execute() would free one page only)
        if step < free:
            return False
    elif not resume:
        return True
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return True


class Writer:
    """One daemon thread running `WriteJob`s in order against `db` (never while the owner uses `db`: the
    owner waits for the job it handed over before it touches the connection itself)."""

    def __init__(self, db: sqlite3.Connection, notify: Callable[[], None]) -> None:
        self._db = db
        self._notify = notify
        self._jobs: queue.SimpleQueue[WriteJob | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="openmonetize-spool-writer", daemon=True)
        self._thread.start()

    def submit(self, job: WriteJob) -> WriteJob:
        self._jobs.put(job)
        return job

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run(self._db)
            job.done.set()
            self._notify()
