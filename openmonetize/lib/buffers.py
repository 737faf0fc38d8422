"""Where tracked events wait for delivery: memory only, or a durable SQLite spool on disk.

Callers append `(seq, body)` to `intake` (a deque: appends are atomic and cheap), `body` being the
event's JSON, serialized once when it was tracked; everything else is done by the delivery thread, which
owns the buffer. `seq` orders events so `flush()` can tell when all events tracked before it are
resolved. Queued events are bytes, not model objects: a fifth of the memory, and nothing for the
garbage collector to traverse while thousands wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmonetize.lib.failures import DeliveryFailure

Entry = tuple[int, bytes]  # (seq, the event as JSON)

SPOOL_SUFFIX = ".om-spool.sqlite3"

# SQLite connections must never be finalized in a forked child: closing one checkpoints and deletes the
# WAL that the parent is still writing. A child parks its inherited spool objects here instead.
_inherited_across_fork: list[object] = []


@dataclass
class Batch:
    """Events (as JSON) taken for one request, with their `seqs` (tracking order, for `flush()`) and
    `keys` (the buffer's handle on each event, to ack, give back or dead-letter it); one entry each."""

    bodies: list[bytes]
    seqs: list[int]
    keys: list[Any]

    def __len__(self) -> int:
        return len(self.bodies)

    @property
    def min_seq(self) -> int:
        return min(self.seqs)

    def request_body(self) -> bytes:
        return b'{"events":[' + b",".join(self.bodies) + b"]}"

    def events(self, indexes: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """The events as dicts, for reports (all, or those at `indexes`)."""
        chosen = self.bodies if indexes is None else [self.bodies[i] for i in indexes]
        return [json.loads(body) for body in chosen]

    def subset(self, indexes: Iterable[int]) -> Batch:
        chosen = list(indexes)
        return Batch([self.bodies[i] for i in chosen], [self.seqs[i] for i in chosen],
                     [self.keys[i] for i in chosen])

    def halves(self) -> tuple[Batch, Batch]:
        """Split in two (a refused batch is bisected until the refused events are isolated)."""
        mid = len(self.bodies) // 2
        return (Batch(self.bodies[:mid], self.seqs[:mid], self.keys[:mid]),
                Batch(self.bodies[mid:], self.seqs[mid:], self.keys[mid:]))


class MemoryBuffer:
    """Events in memory only: lost if the process is killed (not at a normal exit: that drains)."""

    durable = False

    def __init__(self) -> None:
        self.intake: deque[Entry] = deque()

    def open(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.intake)

    @property
    def stored(self) -> int:
        return 0

    def commit(self) -> None:
        pass

    def adopt_orphans(self) -> int:
        return 0

    def take(self, limit: int, max_bytes: int) -> Batch | None:
        """Up to `limit` events whose JSON adds up to at most `max_bytes` (always at least one)."""
        entries: list[Entry] = []
        size = 0
        pop = self.intake.popleft
        with contextlib.suppress(IndexError):
            for _ in range(limit):
                entry = pop()
                size += len(entry[1]) + 1
                if entries and size > max_bytes:
                    self.intake.appendleft(entry)
                    break
                entries.append(entry)
        if not entries:
            return None
        seqs = [seq for seq, _ in entries]
        return Batch([body for _, body in entries], seqs, seqs)

    def give_back(self, batch: Batch) -> None:
        self.intake.extendleft(reversed(list(zip(batch.seqs, batch.bodies, strict=True))))

    def ack(self, batch: Batch) -> None:
        pass

    def dead_letter(self, batch: Batch, failure: DeliveryFailure) -> bool:
        """Keep events refused for good; False when there is nowhere to keep them (then they are reported)."""
        return False

    @property
    def dead_letters(self) -> int:
        return 0

    def low_seq(self) -> float:
        try:
            return self.intake[0][0]
        except IndexError:
            return math.inf

    def remaining(self) -> list[bytes]:
        bodies = [body for _, body in self.intake]
        self.intake.clear()
        return bodies

    def close(self, *, delete_if_empty: bool = True) -> None:
        pass

    def release_after_fork(self) -> None:
        """In a forked child, before the child builds a buffer of its own: nothing to release."""


class SpoolBuffer(MemoryBuffer):
    """Events committed to a SQLite file (WAL) within one commit interval of being tracked.

    Each process writes its own file in `directory`, holding an exclusive lock on it while alive. Files
    whose lock can be taken belong to processes that are gone (exited, crashed, killed, or the machine
    rebooted): a live process adopts their events, so the next process delivers what a dead one left.
    """

    durable = True

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._cursor = 0
        self._reserved: set[int] = set()
        self._stored = 0

    # -- lifecycle (delivery thread) ------------------------------------------------------------------

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.path)
        if self._lock_fd is None:
            raise RuntimeError(f"spool file {self.path} is locked by another process")
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut, not only a crash
        db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL,"
            " body BLOB NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS events_seq ON events (seq)")
        self._db = db
        self.adopt_orphans()

    def adopt_orphans(self) -> int:
        """Move the events of dead processes' spool files into ours; returns how many."""
        db = self._require_db()
        adopted = 0
        for other in sorted(self.directory.glob(f"*{SPOOL_SUFFIX}")):
            if other == self.path:
                continue
            fd = _lock(other)
            if fd is None:
                continue  # its process is alive
            try:
                db.execute("ATTACH DATABASE ? AS orphan", (str(other),))
                try:
                    with _transaction(db):
                        has_table = db.execute(
                            "SELECT 1 FROM orphan.sqlite_master WHERE type = 'table' AND name = 'events'"
                        ).fetchone()
                        if has_table:
                            # seq 0: they were tracked before anything this process tracks
                            cursor = db.execute(
                                "INSERT INTO events (seq, body) SELECT 0, body FROM orphan.events ORDER BY id"
                            )
                            adopted += cursor.rowcount
                finally:
                    db.execute("DETACH DATABASE orphan")
                for path in (other, Path(f"{other}-wal"), Path(f"{other}-shm"), Path(f"{other}.lock")):
                    path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        self._stored += adopted
        if adopted:
            self._cursor = 0
        return adopted

    def close(self, *, delete_if_empty: bool = True) -> None:
        if self._db is not None:
            empty = self._stored == 0 and not self.intake
            self._db.close()
            self._db = None
            if empty and delete_if_empty:
                for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"), Path(f"{self.path}.lock")):
                    path.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def release_after_fork(self) -> None:
        """In a forked child: leave the parent's file to the parent (the child opens one of its own)."""
        _inherited_across_fork.append(self._db)
        self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the parent keeps its lock: flock belongs to the open file
            self._lock_fd = None

    # -- moving events (delivery thread) ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.intake) + self._stored - len(self._reserved)

    @property
    def stored(self) -> int:
        return self._stored

    def commit(self) -> None:
        """Group commit: one transaction for everything tracked since the last one."""
        if not self.intake:
            return
        rows = []
        pop = self.intake.popleft
        with contextlib.suppress(IndexError):
            while True:
                rows.append(pop())
        db = self._require_db()
        with _transaction(db):
            db.executemany("INSERT INTO events (seq, body) VALUES (?, ?)", rows)
        self._stored += len(rows)

    def take(self, limit: int, max_bytes: int) -> Batch | None:
        rows = self._require_db().execute(
            "SELECT id, seq, body FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (self._cursor, limit + len(self._reserved)),
        ).fetchall()
        ids: list[int] = []
        seqs: list[int] = []
        bodies: list[bytes] = []
        size = 0
        for row_id, seq, body in rows:
            if row_id in self._reserved:
                self._cursor = row_id
                continue
            size += len(body) + 1
            if ids and size > max_bytes:
                break
            self._cursor = row_id
            ids.append(row_id)
            seqs.append(seq)
            bodies.append(bytes(body))
            if len(ids) == limit:
                break
        if not ids:
            return None
        self._reserved.update(ids)
        return Batch(bodies, seqs, ids)

    def give_back(self, batch: Batch) -> None:
        self._reserved.difference_update(batch.keys)
        self._cursor = min(self._cursor, min(batch.keys) - 1)

    def ack(self, batch: Batch) -> None:
        db = self._require_db()
        with _transaction(db):
            db.executemany("DELETE FROM events WHERE id = ?", [(row_id,) for row_id in batch.keys])
        self._reserved.difference_update(batch.keys)
        self._stored -= len(batch.keys)

    def low_seq(self) -> float:
        row = self._require_db().execute("SELECT MIN(seq) FROM events").fetchone()
        stored = math.inf if row[0] is None else row[0]
        return min(stored, super().low_seq())

    def remaining(self) -> list[bytes]:
        return []  # kept on disk for the next process

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("spool is not open")
        return self._db


@dataclass(frozen=True)
class SpoolFile:
    """What one spool file holds, as seen from outside (`openmonetize spool status`).

    `live`: a running process holds its lock and will deliver it; the others are orphans, adopted by
    the next client that opens the directory. `oldest` and `newest` are the events' timestamps (UTC,
    ISO 8601, to the millisecond); `bytes` is the space on disk (the database, its WAL and index).
    """

    path: Path
    live: bool
    events: int
    oldest: str | None
    newest: str | None
    bytes: int


def spool_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The spool files in `directory`, oldest name first."""
    return sorted(Path(directory).glob(f"*{SPOOL_SUFFIX}"))


def inspect_spool(directory: str | os.PathLike[str]) -> list[SpoolFile]:
    """Describe each spool file without disturbing it: read-only, and a live process's lock is only tested.

    A file that vanishes meanwhile (adopted or emptied by a live process) is left out.
    """
    found = []
    for path in spool_files(directory):
        try:
            with _read_only(path) as db:
                if _has_events_table(db):
                    count, oldest, newest = db.execute(
                        "SELECT COUNT(*), MIN(t), MAX(t) FROM (SELECT strftime('%Y-%m-%dT%H:%M:%fZ',"
                        " upper(json_extract(CAST(body AS TEXT), '$.timestamp'))) AS t FROM events)"
                    ).fetchone()
                else:  # created by a process that died before its first write
                    count, oldest, newest = 0, None, None
            size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())
        except (sqlite3.Error, FileNotFoundError):
            if not path.exists():
                continue
            raise
        found.append(SpoolFile(path, is_live(path), count, oldest, newest, size))
    return found


def read_spool(directory: str | os.PathLike[str], *, include_live: bool = True) -> Iterator[bytes]:
    """Every event (its JSON, as it will be sent) in the spool files, read-only, file by file in order."""
    for path in spool_files(directory):
        if not include_live and is_live(path):
            continue
        try:
            with _read_only(path) as db:
                if not _has_events_table(db):
                    continue
                for (body,) in db.execute("SELECT body FROM events ORDER BY id"):
                    yield bytes(body)
        except sqlite3.Error:
            if path.exists():
                raise


def is_live(path: Path) -> bool:
    """Whether a running process holds this spool file's lock. Tested with a shared lock, released at
    once, so it never blocks the owner (a client adopting orphans at that instant retries later)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the lock if it was taken
    return False


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that cannot write, checkpoint or delete the owner's WAL."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def _has_events_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone() is not None


def _lock(path: Path) -> int | None:
    """An exclusive, non-blocking lock on `<path>.lock`, released by the OS when the process dies."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
