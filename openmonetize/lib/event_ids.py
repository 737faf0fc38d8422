"""Event ids and default timestamps: the id is the deduplication key, so it must be unique everywhere and
stable across resends; an event tracked without either gets both from one reading of the clock."""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

# A private generator seeded from os.urandom: ~5x cheaper per id than os.urandom itself, and immune to
# an application calling random.seed().
_random = random.Random()

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_START_BITS = 47  # the id's last group counts up from a random start below 2**47: it never outgrows 48 bits


# What every id and default timestamp of one millisecond share, formatted once for the hundreds of events
# tracked in it: (the millisecond, its ids: the id up to its last group, "0192f3a4-7c1e-7a2b-9f00-", then that
# group counting up, the timestamp "2026-11-22T17:00:00.123000Z"). A plain tuple (cheap to make: for a caller
# tracking less often than every millisecond each id makes one), replaced whole, so threads never see half.
_Millisecond = tuple[int, Iterator[str], str]
_current: _Millisecond = (-1, iter(()), "")
_second: tuple[int, str] = (-1, "")  # the current second as the timestamp's text starts: "2026-11-22T17:00:00"


def _millisecond(millis: int) -> _Millisecond:
    global _current, _second
    current = _current
    if current[0] != millis:
        h = f"{millis:012x}"
        rand = _random.getrandbits(74)  # rand_a (12 bits), rand_b (62 bits) of RFC 9562
        seconds, fraction = divmod(millis, 1000)
        second = _second
        if second[0] != seconds:
            second = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        prefix = f"{h[:8]}-{h[8:]}-7{rand >> 62:03x}-{0x8000 | (rand >> 48) & 0x3FFF:04x}-"
        current = _current = (millis, map(f"{prefix}%012x".__mod__, itertools.count(rand & ((1 << _START_BITS) - 1))),
                              f"{second[1]}.{fraction:03d}000Z" if fraction else f"{second[1]}Z")
    return current


def _forget_after_fork() -> None:
    """A forked child must not continue its parent's millisecond (same prefix, same counter)."""
    global _current
    _random.seed()
    _current = (-1, iter(()), "")


os.register_at_fork(after_in_child=_forget_after_fork)


def new_event_id(now_ns: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): the 48-bit Unix millisecond of `now_ns` (else now), version 7, 74 bits that are
    random for the first id of each millisecond, the RFC variant.

    Within a millisecond a process's ids count up from that random start (RFC 9562 section 6.2, method 2,
    "monotonic random"): still unique across processes and machines, sorted by creation even within the
    millisecond, and one small format per id on the caller's hot path instead of building the whole UUID.
    """
    return next(_millisecond((time.time_ns() if now_ns is None else now_ns) // 1_000_000)[1])


def id_and_timestamp(now_ns: int) -> tuple[str, str]:
    """`new_event_id(now_ns)` and `utc_text(now_ns)` at once (the fast path's defaults, one lookup)."""
    current = _millisecond(now_ns // 1_000_000)
    return next(current[1]), current[2]


def utc_datetime(now_ns: int) -> datetime:
    """The default timestamp for a `time.time_ns()` reading: its millisecond (the id's), as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=now_ns // 1_000_000)


def utc_text(now_ns: int) -> str:
    """`utc_datetime(now_ns)` as the event models serialize it: `2026-11-22T17:00:00.123000Z`, no fraction at
    a whole second."""
    return _millisecond(now_ns // 1_000_000)[2]
