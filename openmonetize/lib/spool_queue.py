"""The spool's bookkeeping of the groups on disk (no I/O here): which events of each group are queued,
handed out in a batch, or resolved, so that a batch may cover part of a group, or several, and the
events of one group may be acknowledged, given back or dead-lettered apart.

An event on disk is named by its key `(row id, index in the group)`. A group leaves the queue when all
its events are resolved; the spool then deletes its row.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate, groupby, repeat
from operator import add, attrgetter, itemgetter

DiskKey = tuple[int, int]  # (row id, index in its group)


@dataclass(eq=False)
class Group:
    row_id: int
    seqs: array[int]
    bodies: list[bytes] | None = None  # in memory while handed out (or freshly committed); else read again
    out: set[int] = field(default_factory=set)  # handed out, not yet resolved
    done: set[int] = field(default_factory=set)  # resolved
    lo: int = 0  # every index below it is out or done
    low: float = 0.0  # the lowest seq not resolved
    ends: list[int] | None = None  # running sum of (length + 1), from 0: a range's bytes in a batch body

    size: int = 0  # events in the group (set from `seqs`)

    def __post_init__(self) -> None:
        self.size = len(self.seqs)
        self.low = self._low()

    @property
    def available(self) -> int:
        return self.size - len(self.out) - len(self.done)

    def _low(self) -> float:
        if not self.done:
            return min(self.seqs, default=math.inf)
        return min(map(self.seqs.__getitem__, set(range(self.size)) - self.done), default=math.inf)

    def cache(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.ends = list(map(add, accumulate(map(len, bodies), initial=0), range(len(bodies) + 1)))


class GroupQueue:
    """The groups on disk with events not yet resolved, in commit order."""

    def __init__(self, cache_bytes: int) -> None:
        self.groups: dict[int, Group] = {}
        self.queued = 0  # events not resolved (what the spool reports as `stored`)
        self.out = 0  # of those, handed out
        self.cache_bytes = cache_bytes  # bodies kept in memory after a commit, at most
        self.cached = 0

    def add(self, row_id: int, seqs: array[int], bodies: list[bytes] | None, done: Iterable[int] = ()) -> Group:
        group = Group(row_id, seqs, done=set(done))
        if bodies is not None and self.cached + group_bytes(bodies) <= self.cache_bytes:
            group.cache(bodies)
            self.cached += group.ends[-1] if group.ends else 0
        self.groups[row_id] = group
        self.queued += group.size - len(group.done)
        if not group.available:
            del self.groups[row_id]
        return group

    def low(self) -> float:
        return min(map(attrgetter("low"), self.groups.values()), default=math.inf)

    def take(self, limit: int, max_bytes: int, size: int, load: Callable[[int], list[bytes]],
             keys: list[object], seqs: list[int], bodies: list[bytes]) -> tuple[int, Exception | None]:
        """Hand out events in order into `keys`, `seqs`, `bodies` (up to `limit` in all, the batch's bytes
        `size` so far up to `max_bytes`, at least one); returns the new size, and the error of `load` (which
        reads a group's bodies) if it failed: then what was handed out before that group is kept."""
        for group in list(self.groups.values()):
            if len(keys) >= limit:
                break
            if not group.available:
                continue
            if group.bodies is None:
                try:
                    self._cache(group, load(group.row_id))
                except Exception as exc:
                    return size, exc
            assert group.bodies is not None and group.ends is not None
            ends, i = group.ends, group.lo
            edge = max(max(group.out, default=-1), max(group.done, default=-1))  # past it, all are queued
            full = False
            while i < group.size and len(keys) < limit:
                if i in group.out or i in group.done:
                    i += 1
                    continue
                stop = min(group.size, i + limit - len(keys)) if i > edge else i + 1
                fits = bisect_right(ends, ends[i] + max_bytes - size, i, stop + 1) - 1  # i..fits-1 fit
                if fits <= i:
                    if keys:
                        full = True
                        break
                    fits = i + 1  # a batch holds at least one event
                keys.extend(zip(repeat(group.row_id), range(i, fits)))
                seqs.extend(group.seqs[i:fits])
                bodies.extend(group.bodies[i:fits])
                group.out.update(range(i, fits))
                self.out += fits - i
                size += ends[fits] - ends[i]
                i = fits
                if fits < stop:
                    full = True
                    break
            group.lo = i  # everything before it was out or done, or is now out
            if not group.available:
                self._uncache(group)
            if full:
                break
        return size, None

    def give_back(self, keys: Iterable[DiskKey]) -> None:
        for row_id, index in keys:
            group = self.groups.get(row_id)
            if group is not None and index in group.out:
                group.out.discard(index)
                group.lo = min(group.lo, index)
                self.out -= 1

    def resolve(self, keys: Iterable[DiskKey]) -> tuple[list[int], dict[int, list[int]], int]:
        """Mark handed-out events resolved: (rows now wholly resolved, to delete; indexes newly resolved of
        the groups that stay, by row; how many events that resolved)."""
        finished: list[int] = []
        partial: dict[int, list[int]] = {}
        count = 0
        for row_id, run in groupby(keys, itemgetter(0)):  # (a batch's keys come a group after another)
            group = self.groups.get(row_id)
            if group is None:
                continue
            indexes = list(map(itemgetter(1), run))
            mine = indexes if group.out.issuperset(indexes) else [i for i in indexes if i in group.out]
            if not mine:
                continue
            group.out.difference_update(mine)
            group.done.update(mine)
            self.out -= len(mine)
            self.queued -= len(mine)
            count += len(mine)
            if len(group.done) == group.size:
                del self.groups[row_id]
                self._uncache(group)
                finished.append(row_id)
            else:
                partial.setdefault(row_id, []).extend(mine)
                group.low = group._low()
        return finished, partial, count

    def holds(self, key: DiskKey) -> bool:
        group = self.groups.get(key[0])
        return group is not None and key[1] in group.out

    def clear(self) -> None:
        self.groups.clear()
        self.queued = self.out = self.cached = 0

    def _cache(self, group: Group, bodies: list[bytes]) -> None:
        if len(bodies) != group.size:
            raise ValueError(f"spool row {group.row_id} holds {len(bodies)} events, {group.size} were written")
        group.cache(bodies)
        self.cached += group.ends[-1] if group.ends else 0

    def _uncache(self, group: Group) -> None:
        if group.bodies is not None and group.ends is not None:
            self.cached -= group.ends[-1]
        group.bodies = group.ends = None


def group_bytes(bodies: list[bytes]) -> int:
    return sum(map(len, bodies)) + len(bodies)
