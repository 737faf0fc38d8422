"""The spool's bookkeeping of the groups on disk (no I/O here): which events of each group are queued,
handed out in a batch, or resolved, so that a batch may cover part of a group, or several, and the
events of one group may be acknowledged, given back or dead-lettered apart.

An event on disk is named by its key, one int: `disk_key(row id, index in the group)` (always >= 0; the
spool names events it holds in memory by negative ints). A group leaves the queue when all its events are
resolved; the spool then deletes its row.

Each group keeps its events' states in a `bytearray` (queued, out, resolved), so that handing out,
acknowledging and counting a run of events are slice operations in C, not a Python step (and a set
entry) per event: a batch of 1000 events covers ~17 groups, and this runs on the delivery thread.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, compress
from operator import add, attrgetter

DiskKey = int  # disk_key(row id, index in its group)
_SHIFT = 32  # a group's index in the low bits (a group holds at most spool_format.GROUP_EVENTS events)
_MASK = (1 << _SHIFT) - 1

QUEUED, OUT, DONE = 0, 1, 2
_RUNS = {state: bytes([state]) * 1024 for state in (QUEUED, OUT, DONE)}
_NOT_DONE = bytes(0 if i == DONE else 1 for i in range(256))  # bytearray.translate: 1 where not resolved


def disk_key(row_id: int, index: int) -> DiskKey:
    return (row_id << _SHIFT) | index


def key_row(key: DiskKey) -> int:
    return key >> _SHIFT


def key_index(key: DiskKey) -> int:
    return key & _MASK


def _run(state: int, length: int) -> bytes:
    run = _RUNS[state]
    return run[:length] if length <= len(run) else bytes([state]) * length


class Group:
    """One row's events: `state[i]` is QUEUED, OUT (handed out, not yet resolved) or DONE (resolved)."""

    __slots__ = (
        "base",
        "bodies",
        "ends",
        "lo",
        "low",
        "n_done",
        "n_out",
        "nbytes",
        "row_id",
        "seqs",
        "size",
        "state",
    )

    def __init__(self, row_id: int, seqs: Sequence[int], done: Iterable[int] = ()) -> None:
        if len(seqs) > _MASK:
            raise ValueError(f"spool row {row_id} holds {len(seqs)} events")
        self.row_id = row_id
        self.base = row_id << _SHIFT
        self.seqs = seqs
        self.bodies: list[bytes] | None = None  # in memory while handed out (or freshly committed); else read again
        self.nbytes = 0  # the bodies' bytes in a batch body (each + 1 for its comma), once cached
        self.ends: list[int] | None = None  # running sum of (length + 1), from 0: built when a batch nears its limit
        self.size = len(seqs)
        self.state = bytearray(self.size)
        for i in done:
            if 0 <= i < self.size:
                self.state[i] = DONE
        self.n_done = self.state.count(DONE)
        self.n_out = 0
        self.lo = 0  # every index below it is out or done
        self.low: float = 0.0  # the lowest seq not resolved
        self._set_low()

    @property
    def available(self) -> int:
        return self.size - self.n_out - self.n_done

    @property
    def out(self) -> set[int]:
        """Indexes handed out, not yet resolved (for reports and tests; never on a hot path)."""
        return {i for i, state in enumerate(self.state) if state == OUT}

    @property
    def done(self) -> set[int]:
        return {i for i, state in enumerate(self.state) if state == DONE}

    def _set_low(self) -> None:
        if not self.n_done:
            self.low = min(self.seqs, default=math.inf)
        else:
            self.low = min(compress(self.seqs, self.state.translate(_NOT_DONE)), default=math.inf)

    def cache(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.nbytes = sum(map(len, bodies)) + len(bodies)
        self.ends = None

    def span_bytes(self, start: int, stop: int) -> int:
        assert self.bodies is not None
        if start == 0 and stop == self.size:
            return self.nbytes
        return sum(map(len, self.bodies[start:stop])) + stop - start

    def fitting(self, start: int, stop: int, room: int) -> int:
        """The end of the longest run from `start` (up to `stop`) whose bytes fit in `room`."""
        if self.ends is None:
            assert self.bodies is not None
            self.ends = list(map(add, accumulate(map(len, self.bodies), initial=0), range(self.size + 1)))
        ends = self.ends
        return bisect_right(ends, ends[start] + room, start, stop + 1) - 1

    def queued_run(self, start: int) -> tuple[int, int]:
        """The first run of queued events at or after `start`: (first, end); first == -1 if none."""
        state = self.state
        first = state.find(QUEUED, start)
        if first < 0:
            return -1, -1
        end = self.size
        for other in (OUT, DONE):
            found = state.find(other, first)
            if 0 <= found < end:
                end = found
        return first, end


class GroupQueue:
    """The groups on disk with events not yet resolved, in commit order."""

    def __init__(self, cache_bytes: int) -> None:
        self.groups: dict[int, Group] = {}
        self.queued = 0  # events not resolved (what the spool reports as `stored`)
        self.out = 0  # of those, handed out
        self.cache_bytes = cache_bytes  # bodies kept in memory after a commit, at most
        self.cached = 0

    def add(self, row_id: int, seqs: Sequence[int], bodies: list[bytes] | None, done: Iterable[int] = ()) -> Group:
        group = Group(row_id, seqs, done)
        if bodies is not None and self.cached + group_bytes(bodies) <= self.cache_bytes:
            self._cache(group, bodies)
        self.groups[row_id] = group
        self.queued += group.size - group.n_done
        if not group.available:
            del self.groups[row_id]
            self._uncache(group)
        return group

    def low(self) -> float:
        return min(map(attrgetter("low"), self.groups.values()), default=math.inf)

    def take(self, limit: int, max_bytes: int, size: int, load: Callable[[int], list[bytes]],
             keys: list[DiskKey], seqs: list[int], bodies: list[bytes]) -> tuple[int, Exception | None]:
        """Hand out events in order into `keys`, `seqs`, `bodies` (up to `limit` in all, the batch's bytes
        `size` so far up to `max_bytes`, at least one); returns the new size, and the error of `load` (which
        reads a group's bodies) if it failed: then what was handed out before that group is kept."""
        for group in self.groups.values():  # (nothing is added or removed here)
            if len(keys) >= limit:
                break
            if group.n_out + group.n_done == group.size:
                continue
            if group.bodies is None:
                try:
                    self._cache(group, load(group.row_id))
                except Exception as exc:
                    return size, exc
            assert group.bodies is not None
            full = False
            i = group.lo
            while len(keys) < limit:
                i, end = group.queued_run(i)
                if i < 0:
                    i = group.size
                    break
                stop = min(end, i + limit - len(keys))
                if size + group.span_bytes(i, stop) <= max_bytes:
                    fits = stop
                else:
                    fits = group.fitting(i, stop, max_bytes - size)  # i..fits-1 fit
                    if fits <= i:
                        if keys:
                            full = True
                            break
                        fits = i + 1  # a batch holds at least one event
                base = group.base
                keys.extend(range(base + i, base + fits))
                seqs.extend(group.seqs[i:fits])
                bodies.extend(group.bodies[i:fits])
                group.state[i:fits] = _run(OUT, fits - i)
                group.n_out += fits - i
                self.out += fits - i
                size += group.span_bytes(i, fits)
                if fits < stop:
                    full = True
                    i = fits
                    break
                i = fits
            group.lo = i  # everything before it was out or done, or is now out
            if not group.available:
                self._uncache(group)
            if full:
                break
        return size, None

    def give_back(self, keys: Iterable[DiskKey]) -> None:
        for key in keys:
            group = self.groups.get(key >> _SHIFT)
            index = key & _MASK
            if group is not None and index < group.size and group.state[index] == OUT:
                group.state[index] = QUEUED
                group.n_out -= 1
                group.lo = min(group.lo, index)
                self.out -= 1

    def resolve(self, keys: Sequence[DiskKey]) -> tuple[list[int], dict[int, list[int]], int]:
        """Mark handed-out events resolved: (rows now wholly resolved, to delete; indexes newly resolved of
        the groups that stay, by row; how many events that resolved)."""
        finished: list[int] = []
        partial: dict[int, list[int]] = {}
        count = 0
        position, total = 0, len(keys)
        while position < total:
            first = keys[position]
            row_id = first >> _SHIFT
            group = self.groups.get(row_id)
            index = first & _MASK
            # a batch's keys come a group after another, each group's a run of consecutive indexes: checked
            # at C speed; anything else (a subset after a refusal) is taken key by key
            length = 1 if group is None else max(1, min(total - position, group.size - index))
            run: Sequence[int]
            if length > 1 and keys[position + length - 1] == first + length - 1 \
                    and keys[position:position + length] == list(range(first, first + length)):
                run = range(index, index + length)
            else:
                length = 1
                while position + length < total and keys[position + length] >> _SHIFT == row_id:
                    length += 1
                run = [key & _MASK for key in keys[position:position + length]]
            position += length
            if group is None:
                continue
            state = group.state
            if isinstance(run, range) and run.stop <= group.size and state[run.start:run.stop] == _run(OUT, len(run)):
                state[run.start:run.stop] = _run(DONE, len(run))
                mine: Sequence[int] = run
            else:
                mine = [i for i in dict.fromkeys(run) if i < group.size and state[i] == OUT]
                for i in mine:
                    state[i] = DONE
            if not mine:
                continue
            group.n_out -= len(mine)
            group.n_done += len(mine)
            self.out -= len(mine)
            self.queued -= len(mine)
            count += len(mine)
            if group.n_done == group.size:
                del self.groups[row_id]
                self._uncache(group)
                finished.append(row_id)
            else:
                partial.setdefault(row_id, []).extend(mine)
                group._set_low()
        return finished, partial, count

    def holds(self, key: DiskKey) -> bool:
        group = self.groups.get(key >> _SHIFT)
        index = key & _MASK
        return group is not None and index < group.size and group.state[index] == OUT

    def mark_out(self, key: DiskKey) -> None:
        """An event of a group just written is already in flight (handed out from memory)."""
        group = self.groups[key >> _SHIFT]
        index = key & _MASK
        if group.state[index] == QUEUED:
            group.state[index] = OUT
            group.n_out += 1
            self.out += 1

    def clear(self) -> None:
        self.groups.clear()
        self.queued = self.out = self.cached = 0

    def _cache(self, group: Group, bodies: list[bytes]) -> None:
        if len(bodies) != group.size:
            raise ValueError(f"spool row {group.row_id} holds {len(bodies)} events, {group.size} were written")
        group.cache(bodies)
        self.cached += group.nbytes

    def _uncache(self, group: Group) -> None:
        if group.bodies is not None:
            self.cached -= group.nbytes
        group.bodies = group.ends = None
        group.nbytes = 0


def group_bytes(bodies: list[bytes]) -> int:
    return sum(map(len, bodies)) + len(bodies)
