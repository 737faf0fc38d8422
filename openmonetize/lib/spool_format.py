"""How a spool file stores events on disk, and reading it back: groups of events, and the older one row
per event, both read (a file left by the previous version is adopted, listed and dumped like any other).

The `events` table holds one row per *group*: the events one commit wrote together, cut so that each
fits in one 16 KB page (`GROUP_BYTES`). Inserting, reading and deleting then cost SQLite one row per
~60 events instead of one per event, and nearly all of that work runs in SQLite's C code with the GIL
released:

    id       INTEGER PRIMARY KEY AUTOINCREMENT   order of commits
    seq      INTEGER NOT NULL                    a single event's seq; a group's lowest
    body     BLOB NOT NULL                       a single event's JSON; a group's events' JSON, concatenated
    n        INTEGER                             NULL: the row is one event (the old layout); else how many
    lengths  BLOB                                a group's events' byte lengths (int32, little-endian)
    seqs     BLOB                                a group's events' seqs (int64, little-endian)

`events_done (row_id, first, last)` records index ranges of a group already resolved (acknowledged or
dead-lettered) while the rest of it waits: they are never queued again, by this process or by one that
adopts the file. A group is deleted, with its ranges, once all of it is resolved (`RESOLVED_TRIGGER`).

Rows of the old layout (`n` NULL) are still written by `spool dead-letters --resend` (one per resent
event) and read everywhere rows are read.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate, pairwise
from operator import add
from typing import Any

PAGE_SIZE = 16384  # a new file's pages (SQLite's default is 4096)
# A group fits in one leaf page (SQLite keeps a row of up to PAGE_SIZE - 35 bytes on its page): no overflow
# chains, so a damaged or missing page (a truncated file) loses that page's group and nothing else, and
# reading, writing and deleting a group touches one page. Each event costs its JSON and 12 bytes (its length
# and seq); the rest is the row's header and small columns.
GROUP_BYTES = PAGE_SIZE - 35 - 64
GROUP_EVENTS = 1000  # a group's events, at most (so a group never outgrows a batch of the default size)
_PER_EVENT = 12
CHUNK = 1000  # rows per query when reading a file, events per transaction when copying one

EVENTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL,"
    " body BLOB NOT NULL, n INTEGER, lengths BLOB, seqs BLOB)"
)
DONE_TABLE = (
    "CREATE TABLE IF NOT EXISTS events_done (row_id INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL)"
)
DONE_INDEX = "CREATE INDEX IF NOT EXISTS events_done_row ON events_done (row_id)"
# A range (id, -1, -1) says the whole group is resolved: the group and its ranges go, in the same statement
# (so that recording what a batch resolved, deletions included, is one statement).
RESOLVED_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS events_resolved AFTER INSERT ON events_done WHEN NEW.first < 0 BEGIN"
    " DELETE FROM events WHERE id = NEW.row_id; DELETE FROM events_done WHERE row_id = NEW.row_id; END"
)
DEAD_LETTERS_TABLE = (
    "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT,"
    " body BLOB NOT NULL, kind TEXT NOT NULL, status INTEGER, reason TEXT NOT NULL, details TEXT,"
    " dead_at TEXT NOT NULL)"
)
_MAX_ROWID = 2**63 - 1
_SWAP = sys.byteorder != "little"


def _packed(code: str, values: Sequence[int]) -> bytes:
    packed = array(code, values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def _unpacked(code: str, data: bytes) -> array[int]:
    values = array(code, data)
    if _SWAP:
        values.byteswap()
    return values


def cut(bodies: Sequence[bytes]) -> list[tuple[int, int]]:
    """Where to cut `bodies` into groups: (start, stop) pairs, each at most GROUP_EVENTS events taking at
    most GROUP_BYTES (an event larger than that is a group alone, on overflow pages)."""
    return cut_lengths(list(map(len, bodies)))


def cut_lengths(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """`cut`, from the bodies' lengths."""
    ends = list(map(add, accumulate(lengths), range(_PER_EVENT, _PER_EVENT * (len(lengths) + 1), _PER_EVENT)))
    cuts = []
    start = 0
    while start < len(ends):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, bisect_right(ends, base + GROUP_BYTES, start))
        stop = min(stop, start + GROUP_EVENTS)
        cuts.append((start, stop))
        start = stop
    return cuts


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT. SQLite may already have rolled back on an error (a full disk): the
    ROLLBACK is then skipped, so the original error is the one raised."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def group_row(seqs: Sequence[int], bodies: Sequence[bytes]) -> tuple[int, bytes, int, bytes, bytes]:
    """The (seq, body, n, lengths, seqs) columns of one group."""
    return min(seqs), b"".join(bodies), len(bodies), _packed("i", list(map(len, bodies))), _packed("q", seqs)


def group_rows(seqs: Sequence[int], bodies: Sequence[bytes], lengths: Sequence[int],
               cuts: Sequence[tuple[int, int]]) -> list[tuple[int, bytes, int, bytes, bytes]]:
    """`group_row` of each cut of the events whose `lengths` are given: the lengths and seqs are packed
    once for all, and each group's are a slice of those bytes."""
    low = [min(seqs[a:b]) for a, b in cuts]
    all_lengths, all_seqs = _packed("i", lengths), _packed("q", seqs)
    join = b"".join
    return [(first, join(bodies[a:b]), b - a, all_lengths[4 * a:4 * b], all_seqs[8 * a:8 * b])
            for first, (a, b) in zip(low, cuts, strict=True)]


def insert_groups(count: int) -> str:
    """One INSERT of `count` groups (its parameters: `group_row`'s, one group after another)."""
    return "INSERT INTO events (seq, body, n, lengths, seqs) VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * count)


def insert_ranges(count: int) -> str:
    """One INSERT of `count` (row_id, first, last) resolved ranges."""
    return "INSERT INTO events_done (row_id, first, last) VALUES " + ", ".join(["(?, ?, ?)"] * count)


def split(body: bytes, n: int | None, lengths: bytes | None) -> list[bytes]:
    """A row's events' JSON: the row itself (old layout) or its group, cut at the stored lengths."""
    if n is None or lengths is None:
        return [bytes(body)]
    ends = list(accumulate(_unpacked("i", lengths), initial=0))
    if len(ends) != n + 1 or ends[-1] != len(body):
        raise sqlite3.DatabaseError("a spool group's lengths do not match its body (database disk image is malformed)")
    data = bytes(body)
    return [data[a:b] for a, b in pairwise(ends)]


def seqs_of(seqs: bytes | None, n: int) -> array[int]:
    return _unpacked("q", seqs) if seqs is not None else array("q", bytes(8 * n))


def grouped(db: sqlite3.Connection) -> bool:
    """Whether this file's events table has the group columns (False: a file of the previous version)."""
    return any(row[1] == "n" for row in db.execute("PRAGMA table_info(events)"))


def done_ranges(db: sqlite3.Connection) -> dict[int, set[int]]:
    """Indexes of groups already resolved, by row id (none in a file of the previous version)."""
    if not has_table(db, "events_done"):
        return {}
    done: dict[int, set[int]] = {}
    for row_id, first, last in db.execute("SELECT row_id, first, last FROM events_done"):
        done.setdefault(int(row_id), set()).update(range(int(first), int(last) + 1))
    return done


def ranges(indexes: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted indexes as (first, last) runs."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indexes):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def row_columns(db: sqlite3.Connection) -> str:
    return "body, n, lengths" if grouped(db) else "body, NULL, NULL"


def queued(db: sqlite3.Connection, *, salvage: bool = False, after: int = 0,
           done: dict[int, set[int]] | None = None) -> Iterator[tuple[int, list[bytes]]]:
    """(row id, its events still queued) for each row after `after`, in order: rows of either layout,
    resolved parts of groups left out. `salvage`: step over damaged pages (see `_readable_rows`)."""
    if done is None:
        done = done_ranges(db)
    read = readable_rows if salvage else rows
    for row_id, body, n, lengths in read(db, "events", row_columns(db), after):
        try:
            bodies = split(body, n, lengths)
        except sqlite3.DatabaseError:
            if not salvage:
                raise
            continue  # a group whose lengths were damaged: lost, like a row on a damaged page
        skip = done.get(int(row_id))
        if skip:
            bodies = [b for i, b in enumerate(bodies) if i not in skip]
        yield int(row_id), bodies


def has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def rows(db: sqlite3.Connection, table: str, columns: str, after: int) -> Iterator[tuple[Any, ...]]:
    """Rows of `table` after id `after`, by id, a chunk per query (a healthy file)."""
    while True:
        found = db.execute(f"SELECT id, {columns} FROM {table} WHERE id > ? ORDER BY id LIMIT {CHUNK}",
                           (after,)).fetchall()
        if not found:
            return
        yield from found
        after = found[-1][0]


def readable_rows(db: sqlite3.Connection, table: str, columns: str, after: int) -> Iterator[tuple[Any, ...]]:
    """Like `rows`, stepping over damage: after a failed chunk, row by row; past a row that cannot be
    read, to the next row id that can (exponential then binary search: a b-tree seek skips bad pages)."""
    many = f"SELECT id, {columns} FROM {table} WHERE id > ? ORDER BY id LIMIT {CHUNK}"
    one = f"SELECT id, {columns} FROM {table} WHERE id > ? ORDER BY id LIMIT 1"

    def readable(position: int) -> bool:
        try:
            db.execute(one, (position,)).fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            return False
        return True

    careful = 0  # rows still to read one by one after damage
    while True:
        try:
            found = db.execute(one if careful else many, (after,)).fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            if not careful:
                careful = CHUNK
                continue
            bad, step, good = after, 1, None
            while after + step <= _MAX_ROWID:
                if readable(after + step):
                    good = after + step
                    break
                bad, step = after + step, step * 2
            if good is None:
                return
            while good - bad > 1:
                middle = (good + bad) // 2
                if readable(middle):
                    good = middle
                else:
                    bad = middle
            try:  # `good` itself may be the first row of the next readable page
                first = db.execute(f"SELECT id, {columns} FROM {table} WHERE id = ?", (good,)).fetchall()
            except sqlite3.DatabaseError:
                first = []
            yield from first
            after = good
            continue
        if not found:
            return
        yield from found
        after = found[-1][0]
        careful = max(0, careful - 1)


SQLITE_FULL = 13
_CORRUPT = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


def code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code (Python 3.11+), from the message before that."""
    value = getattr(exc, "sqlite_errorcode", None)
    if isinstance(value, int):
        return value & 0xFF
    message = str(exc)
    for fragment, number in (("disk is full", SQLITE_FULL), ("not a database", 26), ("malformed", 11),
                             ("readonly database", 8), ("unable to open", 14)):
        if fragment in message:
            return number
    return None


def is_corrupt(exc: sqlite3.Error) -> bool:
    return code(exc) in _CORRUPT
