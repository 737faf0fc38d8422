"""Where tracked events wait for delivery with a spool: a durable SQLite file on disk (`SpoolBuffer`, an
extension of `memory_buffer.MemoryBuffer`), and the spool files seen from outside (the `spool` commands).
Imported only when a spool is configured (or inspected): a client without one never loads SQLite or the
spool's modules. `Batch`, `Entry` and `MemoryBuffer` are also importable from here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import secrets
import sqlite3
import stat
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import repeat, starmap
from operator import neg
from pathlib import Path
from typing import Any

from openmonetize.lib.failures import DeliveryFailure
from openmonetize.lib.memory_buffer import AroundCommit
from openmonetize.lib.memory_buffer import Batch as Batch
from openmonetize.lib.memory_buffer import Entry as Entry
from openmonetize.lib.memory_buffer import MemoryBuffer as MemoryBuffer
from openmonetize.lib.spool_format import (
    CHUNK,
    DEAD_LETTERS_TABLE,
    DONE_INDEX,
    DONE_TABLE,
    EVENTS_TABLE,
    PAGE_SIZE,
    RESOLVED_TRIGGER,
    SQLITE_FULL,
    done_ranges,
    insert_ranges,
    queued,
    ranges,
    readable_rows,
    rows,
    split,
    transaction,
)
from openmonetize.lib.spool_format import code as _code
from openmonetize.lib.spool_format import has_table as _has_table
from openmonetize.lib.spool_format import is_corrupt as _is_corrupt
from openmonetize.lib.spool_queue import DONE, OUT, DiskKey, Fresh, Group, GroupQueue, disk_key, done_indexes
from openmonetize.lib.spool_writer import RANGES_PER_STATEMENT, RECLAIM_BYTES, WriteJob, Writer, give_space_back, write

logger = logging.getLogger("openmonetize")

SPOOL_SUFFIX = ".om-spool-v2.sqlite3"  # files of this version (groups of events, see spool_format)
# Files of the previous version (one row per event): still adopted, listed, dumped. A new name, so that a
# process of the previous version sharing the directory (a rolling deploy) never adopts a file it would
# misread: it sees only files of its own kind.
LEGACY_SUFFIX = ".om-spool.sqlite3"
_SUFFIXES = (SPOOL_SUFFIX, LEGACY_SUFFIX)
_CACHE_BYTES = 8 << 20  # events just committed stay in memory for their batch up to this (else read back)
_WAL_LIMIT = 4 << 20  # the WAL's size between checkpoints (as SQLite's default: 1000 pages of 4 KB)

def _just_commit(commit: Callable[[], None]) -> None:
    commit()

# Events in memory are named by negative keys in a batch: held rows (the disk refused them) by a counter
# from 1, events handed out before their write (`spool_queue.Fresh`) by numbers from here.
_FRESH_NUMBERS = 1 << 62
# Once rows have waited on disk for this many due commits (a second at the default interval: commits are due
# every half interval while events arrive), events not yet written take at most 1/_UNSTAGED_SHARE of a batch
# (events and bytes): the disk's rows then drain at half the delivered rate or more, the new events keep the
# other half (those acknowledged before their commit are never written). Until then, a burst is delivered
# unwritten first, as much of it as delivery keeps up with: each of its events sent before its commit is a
# write saved (a burst that outruns delivery for less than a second, the rows it left wait less than that).
_BACKLOG_PATIENCE = 40
_UNSTAGED_SHARE = 2

# SQLite connections must never be finalized in a forked child: closing one checkpoints and deletes the
# WAL that the parent is still writing. A child parks its inherited spool objects here instead.
_inherited_across_fork: list[object] = []


class SpoolError(OSError):
    """The spool directory cannot be used at all (not writable, a file, another user's, a read-only file
    system): raised once, at construction, so a misconfiguration fails where it is made, not at every
    `track_*` and not later on a background thread. `directory` and `reason` say which and why."""

    def __init__(self, directory: str | os.PathLike[str], reason: str, code: int | None = None) -> None:
        self.directory = os.fspath(directory)
        self.reason = reason
        super().__init__(code or errno.EIO, f"cannot use {self.directory!r} as a spool directory: {reason}")

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.directory, self.reason, self.errno)


def _in_memory(key: int) -> bool:
    return key < 0


def _log_notice(failure: DeliveryFailure) -> None:
    logger.error("openmonetize: %s", failure)


class SpoolBuffer(MemoryBuffer):
    """Events committed to a SQLite file (WAL) within one commit interval of being tracked.

    Each process writes its own file in `directory`, holding an exclusive lock on it while alive. Files
    whose lock can be taken belong to processes that are gone (exited, crashed, killed, or the machine
    rebooted): a live process adopts their events, so the next process delivers what a dead one left.

    Each commit writes the events tracked since the last one as a few rows, groups of up to 16 KB (one
    page each, see `spool_format`): SQLite's work then runs per group, in C with the GIL released, not per
    event in Python. Events of a group are handed out, acknowledged, given back and dead-lettered apart
    (`spool_queue`); the resolved part of a group that stays is recorded (`events_done`), so that nothing
    recorded as resolved is queued again after a crash; a dead letter is recorded in its own transaction.

    Paced by a delivery loop (`pace`: it says at each `commit` whether one is `due`: every half commit
    interval, writing what was tracked before the previous one; when a flush begins, when one runs out of
    time and at shutdown, everything, `written` telling when that is on disk), tracked events are written
    at due commits only, with the events resolved meanwhile, in one transaction run by a writer thread
    (`spool_writer`): the delivery thread never waits on SQLite in the steady state. An event is on disk
    within a commit interval (and that write) of being tracked unless it was resolved before: paced, events
    are handed out from the intake at once, before their write
    (`Fresh`) and before the backlog on disk (half a batch at most once it has waited a second or so, so
    that it drains behind any producer: `_take_unstaged_first`), and a commit writes those not yet resolved
    (in flight or not), so an event acknowledged or dead-lettered before its commit is never written to `events` (a dead
    letter is written to `dead_letters` at once, as always); an acknowledged event that a crash leaves
    unrecorded is sent again (with its id: the service deduplicates it). Driven directly (not paced),
    every call writes at once, on the caller's thread, and events are handed out once written.

    The file gives its space back while the client runs: it is created with `auto_vacuum=INCREMENTAL`, and
    once deliveries have freed half of it, free pages are returned to the file system and the WAL is
    truncated (`spool_writer.give_space_back`).

    Faults never raise out of the delivery thread's methods: when the disk refuses a write (full, I/O
    error), the events stay in memory in order (`held`), are handed out from there, and go back to disk
    at a later commit; `report` gets one `spool_error` notice per episode. Events refused for good are
    moved to a `dead_letters` table in the same file, which the client never deletes.
    """

    durable = True

    def __init__(self, directory: str | os.PathLike[str],
                 report: Callable[[DeliveryFailure], None] = _log_notice) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
        self.report = report
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._schema_ready = False
        self._queue = GroupQueue(_CACHE_BYTES)  # what is on disk, not resolved
        self.paced = False
        self._notify: Callable[[], None] = lambda: None
        self._writer: Writer | None = None
        self._job: WriteJob | None = None  # handed to the writer, not yet collected
        self._job_resolved: dict[int, set[int]] = {}  # what the job records as resolved
        self._owed = False  # a commit was due while the writer was busy
        self._owed_all = False  # ... and one of them was to write the young events too
        self._marks = (0, 0)  # what `_received` was at the last two due commits
        self._pending: dict[int, set[int]] = {}  # resolved, to record at the next due commit (paced)
        self._unsaved: dict[int, set[int]] = {}  # resolved in memory, the disk refused to record them
        self._held: dict[int, Entry] = {}  # rows the disk refused, by a counter (their key is its negative)
        self._held_reserved: set[int] = set()
        self._moved: dict[int, DiskKey] = {}  # rows in memory written while in flight: number -> disk key
        self._next_held = itertools.count(1)
        self._fresh: Fresh | None = None  # taken from the intake (paced), not yet handed to the writer
        self._writing: Fresh | None = None  # those of `_job`
        self._placed: list[Fresh] = []  # written while some were in flight: their batches' keys name them
        self._next_fresh = _FRESH_NUMBERS
        self._dead = 0
        self._freed = 0  # groups deleted (about a page each) since the free space was last looked at
        self._reclaiming = False  # space is being given back, step by step (see give_space_back)
        self._fault: str | None = None  # the current episode's cause, reported once
        self._adopted_once = False
        self._around_commit: AroundCommit = _just_commit  # (the adoption in progress's: see adopt_orphans)
        self._progress: dict[Path, _Progress] = {}  # what was copied from an orphan not yet removed
        self._warned: set[Path] = set()

    # -- lifecycle --------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create this process's file, lock and tables (on the caller's thread: fast, adopts nothing).

        Raises `SpoolError` when the directory cannot be used; then nothing is left open or behind. A
        disk that is merely full does not raise: events are held in memory until it has room.
        """
        if self._db is not None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise SpoolError(self.directory, "it exists and is not a directory", exc.errno) from exc
        except OSError as exc:
            raise SpoolError(self.directory, _os_reason(exc, self.directory), exc.errno) from exc
        if not self.directory.is_dir():
            raise SpoolError(self.directory, "it exists and is not a directory", errno.ENOTDIR)
        try:
            fd = _lock(self.path)
        except OSError as exc:
            self._remove_own_files()
            raise SpoolError(self.directory, _os_reason(exc, self.directory), exc.errno) from exc
        if fd is None:  # the name is this process's and random: only a stray process could hold it
            raise SpoolError(self.directory, f"{self.path.name} is locked by another process", errno.EBUSY)
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db, self._lock_fd = db, fd
            self._ensure_schema()
        except sqlite3.Error as exc:
            if _code(exc) == SQLITE_FULL:  # usable, only full: hold events in memory until it has room
                self._failed(exc)
                return
            self._db = self._lock_fd = None
            if db is not None:
                db.close()
            os.close(fd)
            self._remove_own_files()
            raise SpoolError(self.directory, f"SQLite cannot write {self.path.name} there ({exc})",
                             errno.EACCES if _code(exc) in _NO_ACCESS else errno.EIO) from exc

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        db = self._require_db()
        # (a connection's setting) Debian's and Ubuntu's SQLite overwrite every page a delete frees with zeros
        # (SECURE_DELETE): a second 16 KB write, to the WAL then the file, for each group delivered. FAST
        # zeroes what it can without more I/O, as most builds' default (OFF) would not.
        db.execute("PRAGMA secure_delete=FAST")
        # (both take effect in a file with no tables yet: ours is new)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a group is one leaf page: no overflow chains
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut, not only a crash
        db.execute(f"PRAGMA wal_autocheckpoint={_WAL_LIMIT // PAGE_SIZE}")  # checkpointed at about this size
        db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")  # and once emptied, truncated to it
        with transaction(db):
            db.execute(EVENTS_TABLE)
            db.execute(DONE_TABLE)
            db.execute(DONE_INDEX)
            db.execute(RESOLVED_TRIGGER)
            db.execute(DEAD_LETTERS_TABLE)
        self._schema_ready = True

    def close(self, *, delete_if_empty: bool = True) -> None:
        """Write what is still in memory, then close. Events the disk still refuses are reported as
        `undelivered` (nothing else could keep them). A file holding only dead letters is kept."""
        self._settle()
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        if self._db is not None:
            self._commit_intake()  # what was tracked after the last commit (not adopting anything now)
            self._record_pending()
            lost = [body for _, body in self._held.values()]
            if lost:
                self._held.clear()
                self._held_reserved.clear()
                self.report(DeliveryFailure(
                    "undelivered", [json.loads(body) for body in lost],
                    f"the spool {self.path} refused them until the client closed ({self._fault})"))
            empty = self._schema_ready and not (self._queue.queued or self._unsaved or self._pending or self._dead)
            self._db.close()
            self._db = None
            if empty and delete_if_empty:
                self._remove_own_files()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def release_after_fork(self) -> None:
        """In a forked child: leave the parent's file to the parent (the child opens one of its own)."""
        _inherited_across_fork.append(self._db)
        self._db = None
        self._held.clear()
        self._queue.clear()
        self._pending.clear()
        self._moved.clear()
        self._fresh = self._writing = None
        self._placed.clear()
        self._job = self._writer = None  # (the writer thread is the parent's: it does not exist here)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the parent keeps its lock: flock belongs to the open file
            self._lock_fd = None

    # -- counts -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return (len(self.intake) + self._queue.queued - self._queue.out + len(self._held) - len(self._held_reserved)
                + sum(fresh.available for fresh in (self._writing, self._fresh) if fresh is not None))

    @property
    def stored(self) -> int:
        return self._queue.queued

    def ready(self) -> int:
        ready = self._queue.queued - self._queue.out + len(self._held) - len(self._held_reserved)
        if self._hands_out_fresh():
            ready += len(self.intake) + sum(fresh.available for fresh in (self._writing, self._fresh)
                                            if fresh is not None)
        return ready

    def hands_out_unwritten(self) -> bool:
        return self._hands_out_fresh()

    def _hands_out_fresh(self) -> bool:
        """Whether `take` hands out events from memory before their write: paced, and the disk healthy."""
        return self.paced and self._fault is None and not self._held and not self._unsaved

    @property
    def held(self) -> int:
        """Events kept in memory because the disk refused them (written back at a later commit)."""
        return len(self._held)

    @property
    def dead_letters(self) -> int:
        return self._dead

    def low_seq(self) -> float:
        low = min(super().low_seq(), self._queue.low(),
                  *(fresh.low() for fresh in (self._writing, self._fresh) if fresh is not None))
        if self._held:
            low = min(low, next(iter(self._held.values()))[0])
        return low

    # -- moving events (delivery thread) ------------------------------------------------------------------

    def uncommitted(self) -> bool:
        """Whether a commit would have anything to do: events or resolutions to write, a write to take in
        or owed, rows the disk refused, space to give back. A delivery loop waits the long way otherwise
        (and `track_*` wakes it: see DeliveryWorker.idle)."""
        return bool(self.intake or self._fresh is not None or self._pending or self._owed or self._job is not None
                    or self._held or self._unsaved or self._fault is not None or not self._adopted_once
                    or self._reclaim_due())

    def written(self) -> bool:
        """Whether every commit made due so far has completed: none is owed and the writer's job (if any) is
        taken in, so the events it staged are on disk (or, the disk refusing them, held in memory)."""
        return self._job is None and not self._owed

    def pace(self, notify: Callable[[], None]) -> None:
        self.paced = True
        self._notify = notify

    def commit(self, due: bool = True, *, young: bool = True) -> None:
        """Group commit: everything tracked since the last one, and what was resolved since (paced), in
        one transaction; nothing when not `due`. Paced, the writer thread runs it (collected at a later
        call); else it runs here. Never raises for the disk: what it refuses stays in memory, in order,
        and is retried at every later commit.

        Not `young` (a delivery loop's periodic commit, due every half commit interval), a healthy paced
        spool writes only the events tracked before the previous due commit: those tracked since are at most
        half an interval old, and stay in memory (handed out, perhaps acknowledged) for the next one, when
        they are at most a whole interval old: so each event has at least half an interval to be acknowledged
        before its write, and none waits longer than before for it."""
        if not self._adopted_once:  # a dispatcher that never asks still delivers what dead processes left
            self.adopt_orphans()
        if due:
            self._queue.commits += 1
            self._marks = (self._marks[1], self._received())
            self._owed_all = self._owed_all or young
        self._owed = self._owed or due
        if self._job is not None and self._job.done.is_set():
            self._settle()
        if not self._owed or self._job is not None:
            return  # (not due; or the writer still writes the last one: this one follows when it is done)
        self._owed = False
        everything, self._owed_all = self._owed_all, False
        if self.paced and self._db is not None and self._schema_ready and self._fault is None \
                and not self._held and not self._unsaved:
            fresh = self._stage(None if everything else self._marks[0])
            rows = fresh.unresolved() if fresh is not None else []
            resolved, self._pending = self._pending, {}
            if rows or resolved or self._reclaim_due():  # (free space left over: given back step by step)
                if self._writer is None:
                    self._writer = Writer(self._db, self._notify)
                self._job_resolved = resolved
                self._writing = fresh if rows else None
                ranges_done = self._resolution_rows(resolved)
                self._job = self._writer.submit(WriteJob(rows, ranges_done, reclaim=self._reclaim_due(),
                                                         resume=self._reclaiming))
            return
        self._record_pending()
        self._commit_intake()
        self._maybe_give_space_back()

    def _settle(self) -> None:
        """Wait for the job handed to the writer, and take in its result: the groups it wrote join the
        queue; if the disk refused, its events are held in memory and its resolutions retried."""
        job = self._job
        if job is None:
            return
        job.done.wait()
        self._job = None
        fresh, self._writing = self._writing, None
        if job.error is not None:
            if fresh is not None:
                self._hold_fresh(fresh)  # (before anything tracked later: those are still in memory too)
            for row_id, more in self._job_resolved.items():
                self._unsaved.setdefault(row_id, set()).update(more)
            self._failed(job.error)
            return
        if fresh is not None:
            self._place(fresh, job, cache=True)
        if job.reclaim:
            self._reclaiming = not job.reclaimed
        if job.reclaimed:
            self._freed = 0

    def _received(self) -> int:
        """The number the next event taken from the intake will get (see `Fresh`), plus the intake's."""
        fresh = self._fresh
        return (fresh.base + len(fresh) if fresh is not None else self._next_fresh) + len(self.intake)

    def _stage(self, before: int | None = None) -> Fresh | None:
        """The events to write at this commit: those taken from the intake (`_fresh`) and the rest of it;
        only those numbered below `before` if given (the others stay in `_fresh`)."""
        fresh, self._fresh = self._fresh, None
        rows: list[Entry] = list(starmap(self.intake.popleft, repeat((), len(self.intake))))  # (callers only append)
        if rows:
            if fresh is None:
                fresh = Fresh(self._next_fresh)
            fresh.extend(rows)
        if fresh is not None:
            self._next_fresh = fresh.base + len(fresh)
            if before is not None and before < self._next_fresh:
                self._fresh = fresh.split(max(0, before - fresh.base))
                if not len(fresh):
                    return None
        return fresh

    def _place(self, fresh: Fresh, job: WriteJob, *, cache: bool) -> None:
        """`fresh`'s rows are written (`job`): queue their groups, with what happened to them meanwhile:
        the events in flight stay out (`_placed` maps their batches' keys to the disk's); those resolved
        are recorded at the next commit."""
        seqs, bodies = job.seqs, job.bodies  # (split by the writer)
        states = fresh.written_states()
        for (a, b), row_id in zip(job.cuts, job.ids, strict=True):
            state = states[a:b]
            group = self._queue.add(row_id, seqs[a:b] if cache else array("q", seqs[a:b]),
                                    bodies[a:b] if cache else None, state=state)
            if group.n_done:  # resolved while it was written
                if group.n_done == group.size:
                    self._pending.setdefault(row_id, set())
                else:
                    self._pending.setdefault(row_id, set()).update(done_indexes(state))
        fresh.place(job.cuts, job.ids)
        if fresh.n_out:
            self._placed.append(fresh)

    def _hold_fresh(self, fresh: Fresh) -> None:
        """The disk refused `fresh`'s rows: those not resolved are held in memory, in order, under their
        numbers (so that their batches' keys name them), the ones in flight reserved."""
        for i, (entry, state) in enumerate(zip(fresh.rows, fresh.state, strict=True)):
            if state != DONE:
                number = fresh.base + i
                self._held[number] = entry
                if state == OUT:
                    self._held_reserved.add(number)

    def _reclaim_due(self) -> bool:
        """Whether to look at the free space: after enough was deleted, when everything was delivered, or
        to go on giving it back."""
        enough = self._freed * PAGE_SIZE >= RECLAIM_BYTES
        return self._fault is None and (enough or self._reclaiming or bool(self._freed and not self.stored))

    def _maybe_give_space_back(self) -> None:
        if self._reclaim_due():
            try:
                done = give_space_back(self._require_db(), resume=self._reclaiming)
                self._reclaiming = not done
                if done:
                    self._freed = 0
            except sqlite3.Error as exc:  # space not given back is no fault of delivery: tried again later
                self._freed = 0
                self._reclaiming = False
                logger.debug("openmonetize: could not give back the spool's free space: %s", exc)

    def _record_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        if self._fault is not None or self._unsaved:
            for row_id, more in pending.items():
                self._unsaved.setdefault(row_id, set()).update(more)
            return  # (the episode's write-back records them)
        try:
            self._save_resolved(pending)
        except sqlite3.Error as exc:
            self._unsaved = pending
            self._failed(exc)

    def _commit_intake(self) -> None:
        self._settle()  # (before anything taken later)
        fresh = self._stage()
        if self._fault is None and not self._held and not self._unsaved and self._schema_ready:
            rows = fresh.unresolved() if fresh is not None else []
            if fresh is None or not rows:
                return
            try:
                job = WriteJob(rows, [])
                write(self._require_db(), job)
            except sqlite3.Error as exc:
                self._hold_fresh(fresh)
                self._failed(exc)
                return
            self._place(fresh, job, cache=True)
            return
        if fresh is not None:
            self._hold_fresh(fresh)
        self._write_back()

    def _insert_groups(self, rows: list[Entry], *, cache: bool) -> list[Group]:
        """Write `rows` as groups in one transaction (on this thread), then queue them; the groups, in order."""
        job = WriteJob(rows, [])
        write(self._require_db(), job)
        seqs, bodies = job.seqs, job.bodies
        return [self._queue.add(row_id, seqs[a:b] if cache else array("q", seqs[a:b]), bodies[a:b] if cache else None)
                for row_id, (a, b) in zip(job.ids, job.cuts, strict=True)]

    def _hold(self, rows: Iterable[Entry]) -> None:
        for entry in rows:
            self._held[next(self._next_held)] = entry

    def _write_back(self) -> None:
        """In a fault episode: retry what failed (schema, resolutions, held rows, oldest first, in chunks so
        that a disk with a little room takes what fits); the episode ends when nothing is pending."""
        self._settle()
        db = self._require_db()
        wrote = False  # the episode ends on evidence: a write that succeeded, with nothing left pending
        try:
            if not self._schema_ready:
                self._ensure_schema()
                wrote = True
            if self._unsaved:
                with transaction(db):
                    self._save_resolved(self._unsaved)
                self._unsaved.clear()
                wrote = True
            movable = list(self._held.items())
            for start in range(0, len(movable), CHUNK):
                chunk = movable[start:start + CHUNK]
                groups = self._insert_groups([entry for _, entry in chunk], cache=False)
                keys = [disk_key(group.row_id, i) for group in groups for i in range(group.size)]
                for (held_key, _), key in zip(chunk, keys, strict=True):
                    del self._held[held_key]
                    if held_key in self._held_reserved:  # in flight: on disk too (a retry may wait long)
                        self._held_reserved.discard(held_key)
                        self._moved[held_key] = key
                        self._queue.mark_out(key)
                wrote = True
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        if wrote and self._fault is not None and not self._held and not self._unsaved:
            logger.warning("openmonetize: the spool %s is writable again; the events kept in memory are on disk",
                           self.path)
            self._fault = None

    def _failed(self, exc: sqlite3.Error) -> None:
        """A write or read of our own file failed: one notice per episode."""
        if self._fault is not None:
            return
        self._fault = str(exc)
        self.report(DeliveryFailure(
            "spool_error", [],
            f"cannot write to the spool {self.path} ({exc}); {len(self._held) + len(self.intake)} events are"
            " kept in memory, in order, and delivered from there; they go back to disk when it has room"))

    def take(self, limit: int, max_bytes: int) -> Batch | None:
        """Up to `limit` events, at most `max_bytes` (at least one): rows on disk first, then rows the disk
        refused (held in memory), each in order; a healthy paced spool hands out the events not yet written
        first (`_take_unstaged_first`). Taken rows are not handed out again until given back."""
        keys: list[Any] = []
        seqs: list[int] = []
        bodies: list[bytes] = []
        size = 0
        if self._hands_out_fresh():
            return self._take_unstaged_first(limit, max_bytes)
        if self._queue.queued > self._queue.out:
            size, error = self._queue.take(limit, max_bytes, size, self._load, keys, seqs, bodies)
            if error is not None:
                self._failed(error if isinstance(error, sqlite3.Error) else sqlite3.DatabaseError(str(error)))
        if len(keys) < limit and len(self._held) > len(self._held_reserved) and not (keys and size >= max_bytes):
            taken: list[int] = []
            for held_key, (seq, body) in self._held.items():
                if held_key in self._held_reserved:
                    continue
                size += len(body) + 1
                if keys and size > max_bytes:
                    break
                taken.append(held_key)
                keys.append(-held_key)
                seqs.append(seq)
                bodies.append(body)
                if len(keys) == limit:
                    break
            self._held_reserved.update(taken)
        if not keys:
            return None
        return Batch(bodies, seqs, keys)

    def _take_unstaged_first(self, limit: int, max_bytes: int) -> Batch | None:
        """A healthy paced spool's `take`: events not yet staged for a write first (`_fresh`, then the
        intake's), since one acknowledged before the next commit is never written; then the rows on disk
        (or being written). Once rows have waited there `_BACKLOG_PATIENCE` due commits, the unstaged
        events take at most half the batch, in events and in bytes (`_UNSTAGED_SHARE`), the disk's rows the
        rest, then the unstaged events whatever room the disk left: a producer that outruns delivery cannot
        hold the disk's rows back without bound (nor a flush waiting for them). In the batch, the disk's
        come first (the order `_on_disk` reads)."""
        keys: list[Any] = []
        seqs: list[int] = []
        bodies: list[bytes] = []
        if self._queue.waited() < _BACKLOG_PATIENCE:
            size, full = self._take_unstaged(limit, max_bytes, 0, keys, seqs, bodies)
            if full or len(keys) >= limit:
                return Batch(bodies, seqs, keys)
        else:  # (`taken`=1: none beyond the share, even the first: the disk's rows then fill the batch)
            size, _ = self._take_unstaged(limit // _UNSTAGED_SHARE, max_bytes // _UNSTAGED_SHARE, 0, keys, seqs,
                                          bodies, taken=1)
        old_keys: list[Any] = []
        old_seqs: list[int] = []
        old_bodies: list[bytes] = []
        room = limit - len(keys)
        if self._queue.queued > self._queue.out:
            size, error = self._queue.take(room, max_bytes, size, self._load, old_keys, old_seqs, old_bodies,
                                           len(keys))
            if error is not None:
                self._failed(error if isinstance(error, sqlite3.Error) else sqlite3.DatabaseError(str(error)))
        writing = self._writing  # (reading a group may have taken the writer's result in)
        if writing is not None and writing.available and len(old_keys) < room \
                and not ((keys or old_keys) and size >= max_bytes):
            size, _ = writing.take(room, max_bytes, size, old_keys, old_seqs, old_bodies, len(keys))
        if len(keys) + len(old_keys) < limit and not ((keys or old_keys) and size >= max_bytes):
            self._take_unstaged(limit - len(old_keys), max_bytes, size, keys, seqs, bodies, taken=len(old_keys))
        if not old_keys:
            return Batch(bodies, seqs, keys) if keys else None
        return Batch(old_bodies + bodies, old_seqs + seqs, old_keys + keys)

    def _take_unstaged(self, limit: int, max_bytes: int, size: int, keys: list[Any], seqs: list[int],
                       bodies: list[bytes], taken: int = 0) -> tuple[int, bool]:
        """Hand out events not yet staged for a write: those taken before (`_fresh`), then the intake's
        (`taken`: events the batch holds from elsewhere, as `Fresh.take`)."""
        fresh = self._fresh
        full = False
        if fresh is not None and fresh.available:
            size, full = fresh.take(limit, max_bytes, size, keys, seqs, bodies, taken)
            if full or len(keys) >= limit:
                return size, full
        count = min(limit - len(keys), len(self.intake))
        if count > 0:
            rows: list[Entry] = list(starmap(self.intake.popleft, repeat((), count)))
            if self._fresh is None:
                self._fresh = Fresh(self._next_fresh)
            self._fresh.extend(rows)
            size, full = self._fresh.take(limit, max_bytes, size, keys, seqs, bodies, taken)
        return size, full

    def _load(self, row_id: int) -> list[bytes]:
        self._settle()  # (the connection is the writer's until then)
        row = self._require_db().execute("SELECT body, n, lengths FROM events WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            raise sqlite3.DatabaseError(f"spool row {row_id} is missing (database disk image is malformed)")
        return split(*row)

    def _on_disk(self, keys: list[Any]) -> tuple[list[DiskKey], list[int], list[tuple[Fresh, Sequence[int]]]]:
        """The batch's keys as (on disk, numbers of rows held in memory, numbers of rows taken from the
        intake by the `Fresh` that holds them): rows in memory written while in flight are on disk."""
        if not keys or min(keys) >= 0:
            return keys, [], []
        # (take's order: events on disk, then held, then not yet written; checked, else key by key)
        cut = bisect_left(keys, True, key=_in_memory)
        if cut == 0 or keys[cut - 1] >= 0:
            first, count = -keys[cut], len(keys) - cut
            numbers: Sequence[int]
            if first > 0 and keys[-1] == -(first + count - 1) \
                    and keys[cut:] == list(range(-first, -(first + count), -1)):
                numbers = range(first, first + count)  # (one run: the common case, checked in C)
            else:
                numbers = list(map(neg, keys[cut:]))
            if (isinstance(numbers, range) or (max(keys[cut:]) < 0 and numbers == sorted(numbers))) \
                    and (cut == 0 or min(keys[:cut]) >= 0):
                unwritten = self._by_fresh(numbers)
                if unwritten is not None:
                    return keys[:cut], [], unwritten
        disk: list[DiskKey] = []
        held: list[int] = []
        fresh_numbers: list[int] = []
        for key in keys:
            if key >= 0:
                disk.append(key)
            elif -key in self._moved:
                disk.append(self._moved.pop(-key))
            elif -key not in self._held and self._fresh_of(-key) is not None:
                fresh_numbers.append(-key)
            else:
                held.append(-key)
        return disk, held, self._by_fresh(sorted(fresh_numbers)) or []

    def _live_fresh(self) -> list[Fresh]:
        """Every `Fresh` still followed, in the order of their numbers."""
        return [*self._placed, *(fresh for fresh in (self._writing, self._fresh) if fresh is not None)]

    def _fresh_of(self, number: int) -> Fresh | None:
        for fresh in self._live_fresh():
            if fresh.holds(number):
                return fresh
        return None

    def _by_fresh(self, numbers: Sequence[int]) -> list[tuple[Fresh, Sequence[int]]] | None:
        """Sorted numbers of rows taken from the intake, by the `Fresh` that holds them; None unless all are."""
        out: list[tuple[Fresh, Sequence[int]]] = []
        covered = 0
        for fresh in self._live_fresh():
            a = bisect_left(numbers, fresh.base)
            b = bisect_left(numbers, fresh.base + len(fresh), a)
            if b > a:
                out.append((fresh, numbers[a:b]))
                covered += b - a
        return out if covered == len(numbers) else None

    def _settle_fresh(self, unwritten: list[tuple[Fresh, Sequence[int]]], *, give_back: bool) -> list[DiskKey]:
        """Resolve (or give back) rows taken from the intake; the disk's keys of those written meanwhile,
        to resolve or give back there."""
        disk: list[DiskKey] = []
        for fresh, numbers in unwritten:
            if fresh.ids is not None:  # written: the disk's groups follow them now
                disk += fresh.disk_keys(fresh.resolve(numbers))
            elif give_back:
                fresh.give_back(numbers)
            else:
                fresh.resolve(numbers)
        if self._placed and unwritten:
            self._placed = [fresh for fresh in self._placed if fresh.n_out]
        return disk

    def give_back(self, batch: Batch) -> None:
        disk, held, unwritten = self._on_disk(batch.keys)
        self._queue.give_back([*disk, *self._settle_fresh(unwritten, give_back=True)])
        self._held_reserved.difference_update(held)

    def ack(self, batch: Batch) -> None:
        """Resolved: delete them (a group once all of it is). Never raises: what the disk refuses to record
        is retried at later commits, and those events are never handed out again meanwhile. Events not yet
        written are then never written."""
        disk, held, unwritten = self._on_disk(batch.keys)
        for key in held:
            self._held.pop(key, None)
            self._held_reserved.discard(key)
        if unwritten:
            disk = [*disk, *self._settle_fresh(unwritten, give_back=False)]
        self._resolve(disk)

    def _resolve(self, disk: list[DiskKey], dead: list[tuple[Any, ...]] | None = None) -> bool:
        """Resolve events on disk, in one transaction with `dead` letters to insert; False when the disk
        refused (then they are resolved in memory only, recorded at a later commit, and `dead` is lost)."""
        finished, partial, _ = self._queue.resolve(disk)
        if not finished and not partial and not dead:
            return True
        resolved: dict[int, set[int]] = {row_id: set() for row_id in finished}
        for row_id, indexes in partial.items():
            resolved[row_id] = set(indexes)
        if self.paced and not dead:
            for row_id, more in resolved.items():
                self._pending.setdefault(row_id, set()).update(more)
            return True
        if self._pending:
            for row_id, more in self._pending.items():
                resolved.setdefault(row_id, set()).update(more)
            self._pending = {}
        try:
            if not self._schema_ready:
                raise sqlite3.OperationalError("the spool's tables could not be created")
            with transaction(self._require_db()):
                if dead:
                    self._require_db().executemany(
                        "INSERT INTO dead_letters (event_id, body, kind, status, reason, details, dead_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", dead)
                if self._unsaved:
                    for row_id, more in resolved.items():
                        self._unsaved.setdefault(row_id, set()).update(more)
                    resolved = self._unsaved
                self._save_resolved(resolved)
            self._unsaved = {}
        except sqlite3.Error as exc:
            for row_id, more in resolved.items():
                self._unsaved.setdefault(row_id, set()).update(more)
            self._failed(exc)
            return False
        return True

    def _resolution_rows(self, resolved: dict[int, set[int]]) -> list[tuple[int, int, int]]:
        """`events_done` rows recording resolved events: of a group that stays, the resolved index ranges;
        `(id, -1, -1)` for a group wholly resolved, which `RESOLVED_TRIGGER` then deletes with its ranges."""
        out: list[tuple[int, int, int]] = []
        for row_id, indexes in resolved.items():
            if row_id in self._queue.groups:
                out += [(row_id, first, last) for first, last in ranges(sorted(indexes))]
            else:
                out.append((row_id, -1, -1))
                self._freed += 1
        return out

    def _save_resolved(self, resolved: dict[int, set[int]]) -> None:
        """Record resolved events (alone, or in the caller's transaction): see `_resolution_rows`."""
        values = [v for row in self._resolution_rows(resolved) for v in row]
        db = self._require_db()
        for start in range(0, len(values), 3 * RANGES_PER_STATEMENT):
            part = values[start:start + 3 * RANGES_PER_STATEMENT]
            db.execute(insert_ranges(len(part) // 3), part)

    def dead_letter(self, batch: Batch, failure: DeliveryFailure) -> bool:
        """Move events refused for good (`rejected`, `unconfirmed`) to the dead-letter table, atomically,
        with the status, the reason, each event's detail and when (UTC). False when the disk refused that:
        the events are then resolved as if acknowledged and the caller reports them."""
        self._settle()  # (it writes at once, on this thread; what the writer wrote is on disk now)
        mapped: list[int] = [key if key >= 0 else self._moved.get(-key, key) for key in batch.keys]
        unwritten: list[int] = []  # batch indexes of rows taken from the intake, not yet written
        for i, key in enumerate(mapped):
            fresh = self._fresh_of(-key) if key < 0 and -key not in self._held else None
            if fresh is not None and fresh.state[-key - fresh.base] == OUT:
                if fresh.ids is None:  # (dead-lettered before their write: they never will be written)
                    unwritten.append(i)
                else:  # written while in flight: on disk
                    mapped[i] = fresh.disk_keys(fresh.resolve([-key]))[0]
        self._placed = [fresh for fresh in self._placed if fresh.n_out]
        known = [i for i, key in enumerate(mapped) if (self._queue.holds(key) if key >= 0 else -key in self._held)]
        known = sorted(known + unwritten)
        if not known:
            return True
        for key in batch.keys:
            if key < 0:
                self._moved.pop(-key, None)
        when = _utc_now()
        rows = []
        for i in known:
            body = batch.bodies[i]
            event_id = _event_id(body)
            rows.append((event_id, body, failure.kind, failure.status, failure.reason,
                         _details_for(event_id, failure, len(batch)), when))
        kept = self._resolve([mapped[i] for i in known if mapped[i] >= 0], rows)
        if unwritten and self._fresh is not None:
            self._fresh.resolve([-mapped[i] for i in unwritten])
        for i in known:
            if mapped[i] < 0:
                self._held.pop(-mapped[i], None)
                self._held_reserved.discard(-mapped[i])
        if kept:
            self._dead += len(rows)
        return kept

    # -- adopting dead processes' files (delivery thread) ------------------------------------------------

    def adopt_orphans(self, around_commit: AroundCommit | None = None) -> int:
        """Move the events and dead letters of dead processes' spool files into ours; returns how many events.

        Never raises for a neighbour: a file locked by a live process is left alone; one this process may
        not read or write (another user's) is skipped with one warning, neither adopted nor deleted; a
        corrupt one is salvaged and quarantined (see `_salvage`). A large file is copied in chunks, with
        the events tracked meanwhile committed between them, by `around_commit` if given (the delivery loop's:
        it answers the flushes that ran out of time meanwhile). A process killed while adopting leaves the
        orphan whole: the next one adopts it again, and the service deduplicates the copies by event id.
        """
        if self._db is None or not self._schema_ready:
            return 0  # (commit() tries again once the tables exist)
        self._around_commit = around_commit or _just_commit
        self._settle()
        self._adopted_once = True
        adopted = 0
        for other in spool_files(self.directory):
            if other == self.path:
                continue
            try:
                adopted += self._adopt_file(other)
            except _OwnWriteFailed as exc:
                self._failed(exc.error)
                break  # our disk refuses: the orphans wait where they are
            except Exception:  # a bug must not stop delivery; the file stays for a later attempt
                logger.exception("openmonetize: adopting the spool file %s failed; it is left in place", other)
        return adopted

    def _adopt_file(self, other: Path) -> int:
        try:
            fd = _lock(other)
        except OSError as exc:
            self._warn_once(other, f"cannot lock it ({exc.strerror})")
            return 0
        if fd is None:
            return 0  # its process is alive
        try:
            if not other.exists():  # adopted by another process meanwhile
                Path(f"{other}.lock").unlink(missing_ok=True)
                return 0
            if not os.access(other, os.R_OK | os.W_OK):
                self._warn_once(other, "this process may not read and write it")
                return 0
            progress = self._progress.setdefault(other, _Progress())
            before = progress.events
            try:
                self._copy_from(other, progress, salvage=False)
            except sqlite3.Error as exc:
                if other.exists() and self._unreadable(other, exc):
                    self._quarantine(other, progress, exc)
                return progress.events - before
            for path in (other, *_sidecars(other), Path(f"{other}.lock")):
                path.unlink(missing_ok=True)
            del self._progress[other]
            return progress.events - before
        finally:
            os.close(fd)

    def _unreadable(self, other: Path, exc: sqlite3.Error) -> bool:
        """Whether a neighbour's error means it is corrupt (True); otherwise say why it waits."""
        if _is_corrupt(exc):
            return True
        if _code(exc) in _NO_ACCESS:
            self._warn_once(other, f"SQLite cannot open it ({exc})")
        else:
            logger.warning("openmonetize: cannot adopt the spool file %s now (%s); will retry", other, exc)
        return False

    def _copy_from(self, other: Path, progress: _Progress, *, salvage: bool) -> None:
        """Copy `other`'s queued events (from `progress`) and dead letters into our file, chunk by chunk;
        `other` may be of either layout (see `spool_format`). Errors of `other` propagate as sqlite3
        errors; ours as `_OwnWriteFailed`."""
        src = sqlite3.connect(f"{other.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
        try:
            if salvage:
                src.execute("PRAGMA writable_schema=ON")  # opens a truncated file: its pages that exist are read
                src.execute("PRAGMA query_only=ON")
            tables = {name for (name,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "events" in tables:
                done: dict[int, set[int]] = {}
                try:
                    done = done_ranges(src)
                except sqlite3.DatabaseError:
                    if not salvage:
                        raise  # (salvaged without them: resolved events may be sent again, ids deduplicate)
                chunk: list[Entry] = []
                for row_id, bodies in queued(src, salvage=salvage, after=progress.event_id, done=done):
                    chunk += [(0, body) for body in bodies]  # seq 0: tracked before anything this process tracks
                    if len(chunk) >= CHUNK:
                        self._adopt_chunk(chunk, progress, row_id)
                        chunk = []
                    else:
                        last = row_id
                if chunk:
                    self._adopt_chunk(chunk, progress, last)
            if "dead_letters" in tables:
                columns = "event_id, body, kind, status, reason, details, dead_at"
                read = readable_rows if salvage else rows
                for dead in _chunks(read(src, "dead_letters", columns, progress.dead_id)):
                    self._write_own(f"INSERT INTO dead_letters ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    [row[1:] for row in dead])
                    self._dead += len(dead)
                    progress.dead += len(dead)
                    progress.dead_id = dead[-1][0]
        finally:
            src.close()

    def _adopt_chunk(self, chunk: list[Entry], progress: _Progress, last_row: int) -> None:
        try:
            self._insert_groups(chunk, cache=False)
        except sqlite3.Error as exc:
            raise _OwnWriteFailed(exc) from exc
        progress.events += len(chunk)
        progress.event_id = last_row
        self._around_commit(self._commit_intake)  # what the callers tracked meanwhile reaches the disk between chunks

    def _write_own(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        db = self._require_db()
        try:
            with transaction(db):
                db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _OwnWriteFailed(exc) from exc

    def _quarantine(self, other: Path, progress: _Progress, exc: sqlite3.Error) -> None:
        """A corrupt orphan: salvage its readable rows into our file, then rename it aside (kept, for a
        post-mortem) so that no process tries it again.

        Salvaged: every row SQLite can still read, including the committed transactions of its WAL, row
        by row past damaged pages (damage is stepped over by searching for the next readable row id).
        Lost: rows on damaged pages or under a damaged interior page, possibly a few readable ones between
        two damaged pages close together, and everything when the header or schema page is damaged
        ("file is not a database"). Salvaged events may already have been delivered: ids deduplicate.
        """
        try:
            self._copy_from(other, progress, salvage=True)
        except sqlite3.Error as salvage_exc:  # (our own disk's errors propagate: try again later, from here)
            if not self._unreadable(other, salvage_exc):
                return  # not damage (an I/O error): the file waits for a later attempt
        target = other.with_name(f"{other.name}.corrupt-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}")
        try:
            for source in (other, *_sidecars(other)):
                if source.exists():
                    source.rename(Path(str(source).replace(str(other), str(target), 1)))
        except OSError as rename_exc:
            self._warn_once(other, f"it is corrupt ({exc}) and cannot be moved aside ({rename_exc.strerror})")
            return
        Path(f"{other}.lock").unlink(missing_ok=True)
        del self._progress[other]
        logger.error("openmonetize: the spool file %s is corrupt (%s): moved aside to %s; salvaged %d events and"
                     " %d dead letters from it (rows on damaged pages are lost)", other, exc, target.name,
                     progress.events, progress.dead)

    def _warn_once(self, other: Path, why: str) -> None:
        if other not in self._warned:
            self._warned.add(other)
            logger.warning("openmonetize: the spool file %s is skipped: %s; it is neither adopted nor deleted",
                           other, why)

    def _remove_own_files(self) -> None:
        for path in (self.path, *_sidecars(self.path), Path(f"{self.path}.lock")):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("spool is not open")
        return self._db


@dataclass
class _Progress:
    """How far the copy of one orphan got (ids are the orphan's): a retry resumes there, copying nothing twice."""

    event_id: int = 0
    dead_id: int = 0
    events: int = 0
    dead: int = 0


class _OwnWriteFailed(Exception):
    """Our own file refused a write while adopting (kept apart from the neighbour's errors)."""

    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


_NO_ACCESS = frozenset({3, 8, 14, 23})  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH


def _os_reason(exc: OSError, directory: Path) -> str:
    if isinstance(exc, PermissionError):
        try:
            st = (directory if directory.exists() else directory.parent).stat()
            owner = f" (owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}; this process runs as uid" \
                    f" {os.geteuid()})"
        except OSError:
            owner = ""
        return f"permission denied{owner}"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if isinstance(exc, NotADirectoryError):
        return "a part of the path is not a directory"
    return exc.strerror or str(exc)


def _sidecars(path: Path) -> tuple[Path, Path]:
    return Path(f"{path}-wal"), Path(f"{path}-shm")


def _chunks(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _event_id(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("event_id")
    except (ValueError, AttributeError):
        return None
    return None if value is None else str(value)


def _details_for(event_id: str | None, failure: DeliveryFailure, batch_size: int) -> str | None:
    """The failure's details that concern this event: those naming its id; all of them for a batch of one."""
    mine = [d for d in failure.details if event_id is not None and str(d.get("event_id")) == event_id]
    if not mine and batch_size == 1:
        mine = list(failure.details)
    return json.dumps(mine) if mine else None


@dataclass(frozen=True)
class SpoolFile:
    """What one spool file holds, as seen from outside (`openmonetize spool status`).

    `state`: `live` (a running process holds its lock and will deliver it), `orphaned` (its process is
    gone: the next client that opens the directory adopts it), `corrupt` (SQLite cannot read it: the next
    client salvages what it can and moves it aside), `quarantined` (moved aside so, kept for a post-mortem),
    or `unreadable` (this user may not read it). `problem` says why for the last three. `oldest` and
    `newest` are the queued events' timestamps (UTC, ISO 8601, to the millisecond); `bytes` is the space on
    disk (the database, its WAL and index); `dead_letters` are events refused for good, kept apart.
    """

    path: Path
    live: bool
    events: int
    oldest: str | None
    newest: str | None
    bytes: int
    dead_letters: int = 0
    state: str = "orphaned"
    problem: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    """An event refused for good, as kept in a spool file's dead-letter table (`spool dead-letters`)."""

    path: Path
    live: bool
    row_id: int
    event_id: str | None
    kind: str
    status: int | None
    reason: str
    details: list[dict[str, Any]]
    dead_at: str
    body: bytes

    @property
    def customer_id(self) -> str | None:
        try:
            value = json.loads(self.body).get("customer_id")
        except (ValueError, AttributeError):
            return None
        return None if value is None else str(value)


@dataclass
class ResendResult:
    """What `resend_dead_letters` did: dead letters moved back to the queue of orphaned files, and those
    left alone because their file belongs to a live process (or could not be opened)."""

    moved: int = 0
    moved_ids: set[str] = field(default_factory=set)
    live: int = 0
    live_ids: set[str] = field(default_factory=set)
    live_files: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # files that could not be opened, and why


def spool_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The spool files in `directory` (of this version and the previous one), oldest name first."""
    return sorted(path for suffix in _SUFFIXES for path in Path(directory).glob(f"*{suffix}"))


def quarantined_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Corrupt spool files a client moved aside (`<name>.corrupt-<UTC time>`), without their WAL and index."""
    found = (p for suffix in _SUFFIXES for p in Path(directory).glob(f"*{suffix}.corrupt-*"))
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


def inspect_spool(directory: str | os.PathLike[str]) -> list[SpoolFile]:
    """Describe each spool file without disturbing it: read-only, and a live process's lock is only tested.

    A file that vanishes meanwhile (adopted or emptied by a live process) is left out; a corrupt or
    unreadable one is described as such.
    """
    found = []
    for path in spool_files(directory):
        live = is_live(path)
        count, dead, oldest, newest = 0, 0, None, None
        state, problem = ("live" if live else "orphaned"), None
        try:
            with _read_only(path) as db:
                if _has_table(db, "events"):
                    count, oldest, newest = _queued_span(db)
                if _has_table(db, "dead_letters"):
                    (dead,) = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        except sqlite3.Error as exc:
            if not path.exists():
                continue
            state, problem = ("corrupt" if _is_corrupt(exc) else "unreadable"), str(exc)
        size = _size(path)
        if size is None:
            continue
        found.append(SpoolFile(path, live, count, oldest, newest, size, dead, state, problem))
    for path in quarantined_files(directory):
        size = _size(path)
        if size is not None:
            found.append(SpoolFile(path, False, 0, None, None, size, 0, "quarantined",
                                   "found corrupt and moved aside by a client, which salvaged its readable rows"))
    return found


def read_spool(directory: str | os.PathLike[str], *, include_live: bool = True,
               skipped: list[tuple[Path, str]] | None = None) -> Iterator[bytes]:
    """Every event (its JSON, as it will be sent) in the spool files, read-only, file by file in order.

    A file SQLite cannot read raises, unless `skipped` is given: then it is listed there (with why) and
    the other files are read; the rows read from it before the damage are kept.
    """
    for path in spool_files(directory):
        if not include_live and is_live(path):
            continue
        try:
            with _read_only(path) as db:
                if not _has_table(db, "events"):
                    continue
                for _, bodies in queued(db):
                    yield from bodies
        except sqlite3.Error as exc:
            if not path.exists():
                continue
            if skipped is None:
                raise
            skipped.append((path, str(exc)))


def read_dead_letters(directory: str | os.PathLike[str], *, event_ids: Iterable[str] | None = None,
                      skipped: list[tuple[Path, str]] | None = None) -> Iterator[DeadLetter]:
    """The dead letters of every spool file (live ones included: read-only), file by file in order;
    only those whose event id is in `event_ids` when given. Unreadable files as in `read_spool`."""
    wanted = None if event_ids is None else set(event_ids)
    for path in spool_files(directory):
        live = is_live(path)
        try:
            with _read_only(path) as db:
                if not _has_table(db, "dead_letters"):
                    continue
                for row_id, event_id, kind, status, reason, details, dead_at, body in db.execute(
                        "SELECT id, event_id, kind, status, reason, details, dead_at, body FROM dead_letters"
                        " ORDER BY id"):
                    if wanted is not None and event_id not in wanted:
                        continue
                    yield DeadLetter(path, live, row_id, event_id, kind, status, reason,
                                     json.loads(details) if details else [], dead_at, bytes(body))
        except sqlite3.Error as exc:
            if not path.exists():
                continue
            if skipped is None:
                raise
            skipped.append((path, str(exc)))


def resend_dead_letters(directory: str | os.PathLike[str], *,
                        event_ids: Iterable[str] | None = None) -> ResendResult:
    """Move dead letters (all, or those with these event ids) back into the queue of their file, so that
    the next client opening the directory, or `spool replay`, delivers them (after the data or the key
    was fixed). Only orphaned files: each is locked meanwhile, as an adopting client would; live
    processes' files are left alone (counted in the result)."""
    wanted = None if event_ids is None else sorted(set(event_ids))
    result = ResendResult()
    for path in spool_files(directory):
        try:
            fd = _lock(path)
        except OSError as exc:
            result.skipped.append((path, exc.strerror or str(exc)))
            continue
        if fd is None:  # live: count what it holds, touch nothing
            with contextlib.suppress(sqlite3.Error), _read_only(path) as db:
                rows = _select_dead_letters(db, wanted) if _has_table(db, "dead_letters") else []
                result.live += len(rows)
                result.live_files += 1 if rows else 0
                result.live_ids.update(event_id for _, event_id in rows if event_id is not None)
            continue
        try:
            if not path.exists():
                Path(f"{path}.lock").unlink(missing_ok=True)
                continue
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
            try:
                if not _has_table(db, "dead_letters"):
                    continue
                with transaction(db):
                    rows = _select_dead_letters(db, wanted)
                    db.executemany("INSERT INTO events (seq, body) SELECT 0, body FROM dead_letters WHERE id = ?",
                                   [(row_id,) for row_id, _ in rows])
                    db.executemany("DELETE FROM dead_letters WHERE id = ?", [(row_id,) for row_id, _ in rows])
                result.moved += len(rows)
                result.moved_ids.update(event_id for _, event_id in rows if event_id is not None)
            finally:
                db.close()
        except sqlite3.Error as exc:
            result.skipped.append((path, str(exc)))
        finally:
            os.close(fd)
    return result


def _select_dead_letters(db: sqlite3.Connection, wanted: list[str] | None) -> list[tuple[int, str | None]]:
    if wanted is None:
        return db.execute("SELECT id, event_id FROM dead_letters ORDER BY id").fetchall()
    rows: list[tuple[int, str | None]] = []
    for start in range(0, len(wanted), 500):
        part = wanted[start:start + 500]
        rows += db.execute(f"SELECT id, event_id FROM dead_letters WHERE event_id IN ({','.join('?' * len(part))})",
                           part).fetchall()
    return sorted(rows)


def _queued_span(db: sqlite3.Connection) -> tuple[int, str | None, str | None]:
    """How many events a file queues, and their oldest and newest timestamps (UTC, to the millisecond)."""
    count, oldest, newest = 0, None, None
    with contextlib.closing(sqlite3.connect(":memory:")) as scratch:
        scratch.execute("CREATE TABLE events (body BLOB)")
        for _, bodies in queued(db):
            count += len(bodies)
            scratch.executemany("INSERT INTO events VALUES (?)", [(body,) for body in bodies])
            low, high = scratch.execute(
                "SELECT MIN(t), MAX(t) FROM (SELECT strftime('%Y-%m-%dT%H:%M:%fZ',"
                " upper(json_extract(CAST(body AS TEXT), '$.timestamp'))) AS t FROM events)").fetchone()
            scratch.execute("DELETE FROM events")
            oldest = low if oldest is None or (low is not None and low < oldest) else oldest
            newest = high if newest is None or (high is not None and high > newest) else newest
    return count, oldest, newest


def is_live(path: Path) -> bool:
    """Whether a running process holds this spool file's lock. Tested with a shared lock, released at
    once, so it never blocks the owner (a client adopting orphans at that instant retries later)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY)
    except OSError:  # no lock file (or not ours to open): no live owner we can know of
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the lock if it was taken
    return False


def _size(path: Path) -> int | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    for sidecar in _sidecars(path):
        with contextlib.suppress(FileNotFoundError):
            size += sidecar.stat().st_size
    return size


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that cannot write, checkpoint or delete the owner's WAL."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def _lock(path: Path) -> int | None:
    """An exclusive, non-blocking lock on `<path>.lock`, released by the OS when the process dies."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


