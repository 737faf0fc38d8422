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
# of it is asked for, None until then; its timestamp "2026-11-22T17:00:00.123000Z"; its first id, whose first
# 24 characters "0192f3a4-7c1e-7a2b-9f00-" every id of it shares; whether that first id was given out).
#
# Nearly every LLM call lands in a millisecond of its own, and there the cost is what the caches hold after
# an HTTP call: little. So a new millisecond makes its first id from texts made ahead (the random end of the
# id, 64 at a time; the millisecond's high 32 bits, for 65 s; its second; the millisecond's fraction) and two
# small formats, without an iterator; the hundreds of events tracked within one millisecond then take their
# ids from one C iterator (`map` over an `itertools.count`), a format each. (bench/llm_overhead.py --parts
# times a new millisecond cold: 16-18 us with five formats and an iterator per millisecond, 7-8 us so.)
_Millisecond = tuple[int, "Iterator[str] | None", str, str, bool]
_current: _Millisecond = (-1, None, "", "", False)
_second: tuple[int, str] = (-1, "")  # the current second as the timestamp's text starts: "2026-11-22T17:00:00"
_high: tuple[int, str] = (-1, "")  # the millisecond's high 32 bits, as the id starts: "0192f3a4-"
_FRACTIONS = tuple(".%03d000Z" % fraction if fraction else "Z" for fraction in range(1000))  # noqa: UP031
_TAILS = 64
_tails: list[str] = []  # ends of ids of new milliseconds ("7a2b-9f00-00c3e1a2b4d5"), each random, used once
_lock = threading.Lock()  # the one who makes a millisecond's iterator (its second id): never two of them


def _new_tails() -> None:
    """Random ends of ids: version 7, rand_a (12 bits), the variant, rand_b (62 bits) of RFC 9562, of which
    the last group's top bit is left 0, so that the millisecond's counter never outgrows it."""
    for rand in [_random.getrandbits(74) for _ in range(_TAILS)]:
        _tails.append("7%03x-%04x-%012x" % (rand >> 62, 0x8000 | (rand >> 48) & 0x3FFF,  # noqa: UP031
                                            rand & ((1 << _START_BITS) - 1)))


def _begin(millis: int, take: bool) -> tuple[str, str]:
    """A new millisecond: its first id and its timestamp. The id counts as given out if `take`."""
    global _current, _second, _high
    while True:
        try:
            tail = _tails.pop()  # (atomic: two threads never get the same one)
            break
        except IndexError:  # (again if other threads took all the new ones first)
            _new_tails()
    high = _high
    if high[0] != millis >> 16:
        high = _high = (millis >> 16, "%08x-" % (millis >> 16))
    first = high[1] + "%04x-" % (millis & 0xFFFF) + tail
    seconds, fraction = divmod(millis, 1000)
    second = _second
    if second[0] != seconds:
        second = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    text = second[1] + _FRACTIONS[fraction]
    _current = (millis, None, text, first, take)
    return first, text


def _next_of(millis: int) -> tuple[str, str]:
    """An id and the timestamp of the current millisecond `millis`, which has no iterator yet: it is made."""
    global _current
    with _lock:
        current = _current
        if current[0] == millis and current[1] is None:  # (else another thread made it, or moved on)
            ids = map(f"{current[3][:24]}%012x".__mod__, itertools.count(int(current[3][24:], 16) + current[4]))
            current = _current = (millis, ids, current[2], current[3], True)
    if current[0] != millis or current[1] is None:  # moved on to another millisecond meanwhile
        return _begin(millis, True)
    return next(current[1]), current[2]


def _forget_after_fork() -> None:
    """A forked child must not continue its parent's millisecond (same prefix, same counter)."""
    global _current, _lock
    _random.seed()
    _tails.clear()  # made by the parent: the parent uses them too
    _current = (-1, None, "", "", False)
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
    if current[0] == millis:
        return next(current[1]) if current[1] is not None else _next_of(millis)[0]
    return _begin(millis, True)[0]


def id_and_timestamp(now_ns: int) -> tuple[str, str]:
    """`new_event_id(now_ns)` and `utc_text(now_ns)` at once (the fast path's defaults, one lookup)."""
    millis = now_ns // 1_000_000
    current = _current
    if current[0] == millis:
        return (next(current[1]), current[2]) if current[1] is not None else _next_of(millis)
    return _begin(millis, True)


def utc_datetime(now_ns: int) -> datetime:
    """The default timestamp for a `time.time_ns()` reading: its millisecond (the id's), as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=now_ns // 1_000_000)


def utc_text(now_ns: int) -> str:
    """`utc_datetime(now_ns)` as the event models serialize it: `2026-11-22T17:00:00.123000Z`, no fraction at
    a whole second."""
    millis = now_ns // 1_000_000
    current = _current
    return current[2] if current[0] == millis else _begin(millis, False)[1]
