"""Event ids and default timestamps: the id is the deduplication key, so it must be unique everywhere and
stable across resends; an event tracked without either gets both from one reading of the clock."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

# A private generator seeded from os.urandom: ~5x cheaper per id than os.urandom itself, and immune to
# an application calling random.seed().
_random = random.Random()

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_START_BITS = 47  # the id's last group counts up from a random start below 2**47: it never outgrows 48 bits


# The current millisecond, as every id and default timestamp of it shares it, replaced whole (a plain
# tuple), so threads never see half of one: (the millisecond; its ids from the next on, made when a second id
# of it is asked for, None until then; its timestamp "2026-11-22T17:00:00.123000Z"; one id of it, whose first
# 24 characters "0192f3a4-7c1e-7a2b-9f00-" every id of it shares; the last group of its next id).
#
# Nearly every LLM call lands in a millisecond of its own, so a new millisecond makes its first id with one
# format and no iterator (bench/llm_overhead.py --parts times it); the hundreds of events tracked within one
# millisecond then take their ids from one C iterator (`map` over an `itertools.count`), a format each.
_Millisecond = tuple[int, "Iterator[str] | None", str, str, int]
_current: _Millisecond = (-1, None, "", "", 0)
_second: tuple[int, str] = (-1, "")  # the current second as the timestamp's text starts: "2026-11-22T17:00:00"
_lock = threading.Lock()  # the one who makes a millisecond's iterator (its second id): never two of them


def _begin(millis: int, take: bool) -> tuple[str, str]:
    """A new millisecond: its first id and its timestamp. The id counts as given out if `take`."""
    global _current, _second
    rand = _random.getrandbits(74)  # rand_a (12 bits), rand_b (62 bits) of RFC 9562
    start = rand & ((1 << _START_BITS) - 1)
    # `%` formats, as the millisecond's further ids are made (one C formatter, not format specs' as well)
    groups = (millis >> 16, millis & 0xFFFF, rand >> 62, 0x8000 | (rand >> 48) & 0x3FFF, start)
    first = "%08x-%04x-7%03x-%04x-%012x" % groups  # noqa: UP031
    seconds, fraction = divmod(millis, 1000)
    second = _second
    if second[0] != seconds:
        second = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    text = "%s.%03d000Z" % (second[1], fraction) if fraction else second[1] + "Z"  # noqa: UP031
    _current = (millis, None, text, first, start + 1 if take else start)
    return first, text


def _next_of(millis: int) -> tuple[str, str]:
    """An id and the timestamp of `millis` when the current millisecond has no iterator yet (or is another)."""
    global _current
    current = _current
    if current[0] != millis:
        return _begin(millis, True)
    with _lock:
        current = _current
        if current[0] == millis and current[1] is None:  # (else another thread made it, or moved on)
            ids = map(f"{current[3][:24]}%012x".__mod__, itertools.count(current[4]))
            current = _current = (millis, ids, current[2], current[3], current[4])
    if current[0] != millis or current[1] is None:  # moved on to another millisecond meanwhile
        return _begin(millis, True)
    return next(current[1]), current[2]


def _forget_after_fork() -> None:
    """A forked child must not continue its parent's millisecond (same prefix, same counter)."""
    global _current, _lock
    _random.seed()
    _current = (-1, None, "", "", 0)
    _lock = threading.Lock()  # (a thread of the parent may have held it: it is gone in the child)


os.register_at_fork(after_in_child=_forget_after_fork)


def new_event_id(now_ns: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): the 48-bit Unix millisecond of `now_ns` (else now), version 7, 74 bits that are
    random for the first id of each millisecond, the RFC variant.

    Within a millisecond a process's ids count up from that random start (RFC 9562 section 6.2, method 2,
    "monotonic random"): still unique across processes and machines, sorted by creation even within the
    millisecond, and one small format per id on the caller's hot path instead of building the whole UUID.
    """
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    current = _current
    if current[0] == millis and current[1] is not None:
        return next(current[1])
    return _next_of(millis)[0]


def id_and_timestamp(now_ns: int) -> tuple[str, str]:
    """`new_event_id(now_ns)` and `utc_text(now_ns)` at once (the fast path's defaults, one lookup)."""
    millis = now_ns // 1_000_000
    current = _current
    if current[0] == millis and current[1] is not None:
        return next(current[1]), current[2]
    return _next_of(millis)


def utc_datetime(now_ns: int) -> datetime:
    """The default timestamp for a `time.time_ns()` reading: its millisecond (the id's), as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=now_ns // 1_000_000)


def utc_text(now_ns: int) -> str:
    """`utc_datetime(now_ns)` as the event models serialize it: `2026-11-22T17:00:00.123000Z`, no fraction at
    a whole second."""
    millis = now_ns // 1_000_000
    current = _current
    return current[2] if current[0] == millis else _begin(millis, False)[1]
