"""Where the local server keeps accepted events: in memory, or in SQLite to survive restarts."""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict

__all__ = ["EventStore", "MemoryStore", "SqliteStore", "SummaryRow", "TotalsRow", "read_totals", "summarize"]

Event = dict[str, Any]


class Totals(TypedDict):
    """What is added up for a group of events; totals a group cannot have (image_count of token usage,
    say) are 0."""

    events: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    image_count: int
    quantity: float


class SummaryRow(Totals):
    """Usage totals of one (customer_id, feature_id, model, unit_type) group.

    ``model`` is None for CUSTOM events and ``unit_type`` is None for the others, so
    quantities of different units are never added together.
    """

    customer_id: str
    feature_id: str
    model: str | None
    unit_type: str | None


# The per-event numbers behind a summary, in SummaryRow order after the key.
_Usage = tuple[str, str, str | None, str | None, int, int, int, int, int, float]


class EventStore(Protocol):
    """What the server needs from storage; ``add`` must be atomic per batch."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def add(self, events: Sequence[Event], batch_id: str) -> int:
        """Store the events whose id is new (also within the batch); return how many."""
        ...

    def events(self) -> list[Event]: ...
    def event_ids(self) -> set[str]: ...
    def summary(self) -> list[SummaryRow]: ...
    def clear(self) -> None: ...


def usage_of(event: Event) -> _Usage:
    """Project an event onto the summary key and totals."""
    custom = "quantity" in event
    return (
        event["customer_id"],
        event["feature_id"],
        None if custom else event.get("model"),
        event.get("unit_type") if custom else None,
        int(event.get("input_tokens", 0)),
        int(event.get("output_tokens", 0)),
        int(event.get("cached_input_tokens", 0)),
        int(event.get("reasoning_tokens", 0)),
        int(event.get("image_count", 0)),
        float(event.get("quantity", 0.0)),
    )


def summarize(usages: Iterable[_Usage]) -> list[SummaryRow]:
    """Group usages per key, ordered by key (None first) so results are stable."""
    groups: dict[tuple[str, str, str | None, str | None], SummaryRow] = {}
    for customer, feature, model, unit, inp, out, cached, reasoning, images, qty in usages:
        row = groups.get((customer, feature, model, unit))
        if row is None:
            row = groups[(customer, feature, model, unit)] = SummaryRow(
                customer_id=customer,
                feature_id=feature,
                model=model,
                unit_type=unit,
                events=0,
                input_tokens=0,
                output_tokens=0,
                cached_input_tokens=0,
                reasoning_tokens=0,
                image_count=0,
                quantity=0.0,
            )
        row["events"] += 1
        row["input_tokens"] += inp
        row["output_tokens"] += out
        row["cached_input_tokens"] += cached
        row["reasoning_tokens"] += reasoning
        row["image_count"] += images
        row["quantity"] += qty

    def order(key: tuple[str, str, str | None, str | None]) -> tuple[object, ...]:
        customer, feature, model, unit = key
        return (customer, feature, model is not None, model or "", unit is not None, unit or "")

    return [groups[key] for key in sorted(groups, key=order)]


class MemoryStore:
    """Events in a dict keyed by id; insertion order is acceptance order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, Event] = {}

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def add(self, events: Sequence[Event], batch_id: str) -> int:
        accepted = 0
        with self._lock:
            for event in events:
                if event["event_id"] not in self._events:
                    self._events[event["event_id"]] = event
                    accepted += 1
        return accepted

    def events(self) -> list[Event]:
        with self._lock:
            stored = list(self._events.values())
        return copy.deepcopy(stored)

    def event_ids(self) -> set[str]:
        with self._lock:
            return set(self._events)

    def summary(self) -> list[SummaryRow]:
        with self._lock:
            stored = list(self._events.values())
        return summarize(usage_of(event) for event in stored)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id            TEXT PRIMARY KEY,
    event_type          TEXT NOT NULL,
    customer_id         TEXT NOT NULL,
    feature_id          TEXT NOT NULL,
    model               TEXT,
    unit_type           TEXT,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    image_count         INTEGER NOT NULL,
    quantity            REAL NOT NULL,
    timestamp           TEXT NOT NULL,
    batch_id            TEXT NOT NULL,
    event_json          TEXT NOT NULL
)
"""
_INSERT = "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_USAGE_COLUMNS = (
    "customer_id, feature_id, model, unit_type, input_tokens, output_tokens,"
    " cached_input_tokens, reasoning_tokens, image_count, quantity"
)


class SqliteStore:
    """Events in one SQLite table; reopening the same file keeps deduplication.

    The connection lives between ``open`` and ``close`` (while the server runs); reads
    outside that window use a short-lived connection so a stopped server can still be
    inspected without holding the file open.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r})"

    def open(self) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def add(self, events: Sequence[Event], batch_id: str) -> int:
        rows = [
            (
                event["event_id"],
                event["event_type"],
                *usage_of(event),
                event["timestamp"],
                batch_id,
                json.dumps(event, separators=(",", ":"), ensure_ascii=False),
            )
            for event in events
        ]
        with self._db() as conn, conn:  # the inner "with conn" is one transaction
            cursor = conn.executemany(_INSERT, rows)
            return cursor.rowcount  # ignored (duplicate) rows are not counted

    def events(self) -> list[Event]:
        with self._db() as conn:
            rows = conn.execute("SELECT event_json FROM events ORDER BY rowid").fetchall()
        return [json.loads(text) for (text,) in rows]

    def event_ids(self) -> set[str]:
        with self._db() as conn:
            return {event_id for (event_id,) in conn.execute("SELECT event_id FROM events")}

    def summary(self) -> list[SummaryRow]:
        with self._db() as conn:
            rows = conn.execute(f"SELECT {_USAGE_COLUMNS} FROM events").fetchall()
        return summarize(rows)

    def clear(self) -> None:
        with self._db() as conn, conn:
            conn.execute("DELETE FROM events")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is not None:
                yield self._conn
                return
            conn = self._connect()
            try:
                yield conn
            finally:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        return conn


class TotalsRow(Totals):
    """Usage totals of one group (a customer, a feature or a model) and one unit.

    ``unit_type`` is None for the totals of token and image events and names the unit for CUSTOM
    quantities, so quantities of different units are never added together. ``key`` is None for CUSTOM
    events grouped by model (they have none).
    """

    key: str | None
    unit_type: str | None


GroupBy = Literal["customer", "feature", "model"]
_GROUP_COLUMNS: dict[str, str] = {"customer": "customer_id", "feature": "feature_id", "model": "model"}


def read_totals(path: str | os.PathLike[str], by: GroupBy = "customer", since: datetime | None = None
                ) -> list[TotalsRow]:
    """Totals per group and unit from a SqliteStore file, read-only (a running server keeps writing).

    ``since`` (timezone-aware, or naive meaning local time) keeps the events whose timestamp is at or
    after it, compared as instants to the millisecond whatever offsets the events carry. Rows are
    ordered by key (None last), then unit (None first).
    """
    column = _GROUP_COLUMNS[by]
    where, args = "", []
    if since is not None:
        where = "WHERE strftime('%Y-%m-%dT%H:%M:%f', upper(timestamp)) >= ?"
        args.append(since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23])
    query = (
        f"SELECT {column}, unit_type, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens),"
        f" SUM(reasoning_tokens), SUM(image_count), SUM(quantity) FROM events {where}"
        f" GROUP BY {column}, unit_type ORDER BY {column} IS NULL, {column}, unit_type IS NOT NULL, unit_type"
    )
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(query, args).fetchall()
    finally:
        conn.close()
    return [
        TotalsRow(key=key, unit_type=unit, events=n, input_tokens=inp, output_tokens=out, cached_input_tokens=cached,
                  reasoning_tokens=reasoning, image_count=images, quantity=qty)
        for key, unit, n, inp, out, cached, reasoning, images, qty in rows
    ]
