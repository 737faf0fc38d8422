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
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, compress
from operator import add, attrgetter, itemgetter

DiskKey = int  # disk_key(row id, index in its group)
_SHIFT = 32  # a group's index in the low bits (a group holds at most spool_format.GROUP_EVENTS events)
_MASK = (1 << _SHIFT) - 1

QUEUED, OUT, DONE = 0, 1, 2
_RUNS = {state: bytes([state]) * 1024 for state in (QUEUED, OUT, DONE)}
_NOT_DONE = bytes(0 if i == DONE else 1 for i in range(256))  # bytearray.translate: 1 where not resolved
_IS_DONE = bytes(1 if i == DONE else 0 for i in range(256))


def done_indexes(state: bytearray) -> Iterable[int]:
    """The indexes of the resolved events of `state`."""
    return compress(range(len(state)), state.translate(_IS_DONE))


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
        "born",
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

    def __init__(self, row_id: int, seqs: Sequence[int], done: Iterable[int] = (),
                 state: bytearray | None = None) -> None:
        if len(seqs) > _MASK or (state is not None and len(state) != len(seqs)):
            raise ValueError(f"spool row {row_id} holds {len(seqs)} events")
        self.row_id = row_id
        self.base = row_id << _SHIFT
        self.seqs = seqs
        self.bodies: list[bytes] | None = None  # in memory while handed out (or freshly committed); else read again
        self.nbytes = 0  # the bodies' bytes in a batch body (each + 1 for its comma), once cached
        self.ends: list[int] | None = None  # running sum of (length + 1), from 0: built when a batch nears its limit
        self.size = len(seqs)
        self.state = bytearray(self.size) if state is None else state
        for i in done:
            if 0 <= i < self.size:
                self.state[i] = DONE
        self.n_done = self.state.count(DONE)
        self.n_out = self.state.count(OUT) if state is not None else 0
        self.lo = 0  # every index below it is out or done
        self.low: float = 0.0  # the lowest seq not resolved
        self.born = 0  # the queue's `commits` when it joined
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

    def cache(self, bodies: list[bytes], nbytes: int | None = None) -> None:
        self.bodies = bodies
        self.nbytes = group_bytes(bodies) if nbytes is None else nbytes
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
        return queued_run(self.state, start)


def queued_run(state: bytearray, start: int) -> tuple[int, int]:
    """The first run of queued events at or after `start`: (first, end); first == -1 if none."""
    first = state.find(QUEUED, start)
    if first < 0:
        return -1, -1
    end = len(state)
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
        self._low: float | None = math.inf  # min of the groups' `low`; None: to be computed again
        self.commits = 0  # the owner's clock, in due commits: each group is stamped with it (`waited`)

    def add(self, row_id: int, seqs: Sequence[int], bodies: list[bytes] | None, done: Iterable[int] = (),
            state: bytearray | None = None) -> Group:
        """A group written: its events queued, or as `state` says (some already handed out or resolved,
        from memory before the write); a group with nothing left to resolve is not kept."""
        group = Group(row_id, seqs, done, state)
        if group.n_done == group.size:
            return group
        group.born = self.commits
        nbytes = group_bytes(bodies) if group.available and bodies is not None else 0
        if nbytes and bodies is not None and self.cached + nbytes <= self.cache_bytes:
            self._cache(group, bodies, nbytes)
        elif not isinstance(seqs, array):  # (read back later: a backlog's seqs kept compact, 8 bytes each)
            group.seqs = array("q", seqs)
        self.groups[row_id] = group
        if self._low is not None:
            self._low = min(self._low, group.low)
        self.queued += group.size - group.n_done
        self.out += group.n_out
        return group

    def waited(self) -> int:
        """How many due commits the oldest group with events to hand out has been queued (0: none)."""
        for group in self.groups.values():
            if group.n_out + group.n_done < group.size:
                return self.commits - group.born
        return 0

    def low(self) -> float:
        if self._low is None:
            self._low = min(map(attrgetter("low"), self.groups.values()), default=math.inf)
        return self._low

    def take(self, limit: int, max_bytes: int, size: int, load: Callable[[int], list[bytes]],
             keys: list[DiskKey], seqs: list[int], bodies: list[bytes], taken: int = 0) -> tuple[int, Exception | None]:
        """Hand out events in order into `keys`, `seqs`, `bodies` (up to `limit` in all, the batch's bytes
        `size` so far up to `max_bytes`, at least one unless the batch already holds `taken` events from
        elsewhere); returns the new size, and the error of `load` (which reads a group's bodies) if it
        failed: then what was handed out before that group is kept."""
        for group in list(self.groups.values()):  # (`load` may take a finished write in: groups join)
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
                        if keys or taken:
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
                if group.low == self._low:
                    self._low = None
            else:
                partial.setdefault(row_id, []).extend(mine)
                low = group.low
                group._set_low()
                if low == self._low and group.low != low:
                    self._low = None
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
        self._low = math.inf

    def _cache(self, group: Group, bodies: list[bytes], nbytes: int | None = None) -> None:
        if len(bodies) != group.size:
            raise ValueError(f"spool row {group.row_id} holds {len(bodies)} events, {group.size} were written")
        group.cache(bodies, nbytes)
        self.cached += group.nbytes

    def _uncache(self, group: Group) -> None:
        if group.bodies is not None:
            self.cached -= group.nbytes
        group.bodies = group.ends = None
        group.nbytes = 0


def consecutive(numbers: Sequence[int]) -> bool:
    """Whether `numbers` is a `range` of step 1 (then no check item by item is needed)."""
    return isinstance(numbers, range) and numbers.step == 1


def group_bytes(bodies: list[bytes]) -> int:
    return sum(map(len, bodies)) + len(bodies)


class Fresh:
    """Events taken from the intake and not yet on disk, handed out from memory before their write (a
    commit writes those not yet resolved). Event `i` is numbered `base + i`; its key in a batch is the
    number's negative (the spool's keys for events in memory); `state` as a group's."""

    __slots__ = ("base", "ids", "lo", "mask", "n_done", "n_out", "positions", "rows", "starts", "state", "written")

    def __init__(self, base: int) -> None:
        self.base = base
        self.rows: list[tuple[int, bytes]] = []
        self.state = bytearray()
        self.n_out = self.n_done = 0
        self.lo = 0  # every index below it is out or done
        self.positions: list[int] | None = None  # once handed to the writer: the index of each row written
        self.mask: bytes | bytearray | None = None  # ... and 1 for each row written, else 0 (None: all are)
        # once written (`placed`): the groups' row ids, the position of each one's first row, the rows written
        self.ids: list[int] | None = None
        self.starts: list[int] = []
        self.written = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def available(self) -> int:
        return len(self.rows) - self.n_out - self.n_done

    def holds(self, number: int) -> bool:
        return 0 <= number - self.base < len(self.rows)

    def extend(self, rows: list[tuple[int, bytes]]) -> None:
        self.rows += rows
        self.state += bytes(len(rows))

    def split(self, at: int) -> Fresh:
        """Keep the rows before `at`; the rest, with their states, as a new `Fresh` (never written yet)."""
        assert self.ids is None and self.positions is None
        young = Fresh(self.base + at)
        young.rows, self.rows = self.rows[at:], self.rows[:at]
        young.state, self.state = self.state[at:], self.state[:at]
        for part in (self, young):
            part.n_out = part.state.count(OUT)
            part.n_done = part.state.count(DONE)
        young.lo, self.lo = max(0, self.lo - at), min(self.lo, at)
        return young

    def low(self) -> float:
        """The lowest seq not resolved (the rows are in tracking order)."""
        first = min((i for i in (self.state.find(QUEUED), self.state.find(OUT)) if i >= 0), default=-1)
        return self.rows[first][0] if first >= 0 else math.inf

    def unresolved(self) -> list[tuple[int, bytes]]:
        """The rows to write (all but the resolved), noting their indexes in `positions`."""
        if not self.n_done:
            self.positions = self.mask = None
            return self.rows
        mask = self.mask = self.state.translate(_NOT_DONE)
        self.positions = list(compress(range(len(self.rows)), mask))
        return list(compress(self.rows, mask))

    def index(self, position: int) -> int:
        """The index of the `position`th row written."""
        return position if self.positions is None else self.positions[position]

    def states(self, start: int, stop: int) -> bytearray:
        """The states of the rows written at positions `start`..`stop`."""
        if self.positions is None:
            return self.state[start:stop]
        return bytearray(map(self.state.__getitem__, self.positions[start:stop]))

    def written_states(self) -> bytearray:
        """The states of all the rows written, in order (`states` of each group is a slice of it)."""
        if self.mask is None:
            return self.state
        return bytearray(compress(self.state, self.mask))

    def take(self, limit: int, max_bytes: int, size: int, keys: list[int], seqs: list[int],
             bodies: list[bytes], taken: int = 0) -> tuple[int, bool]:
        """Hand out queued rows in order (as `GroupQueue.take`); returns the batch's new size and whether
        it is full (a row did not fit)."""
        i = self.lo
        full = False
        while len(keys) < limit:
            i, end = queued_run(self.state, i)
            if i < 0:
                i = len(self.rows)
                break
            stop = min(end, i + limit - len(keys))
            part = list(map(itemgetter(1), self.rows[i:stop]))
            added = sum(map(len, part)) + len(part)
            if size + added > max_bytes:
                fits, added = i, 0
                for body in part:
                    if (keys or taken or fits > i) and size + added + len(body) + 1 > max_bytes:
                        break
                    added += len(body) + 1
                    fits += 1
                part = part[:fits - i]
                full = True
            else:
                fits = stop
            number = self.base + i
            keys.extend(range(-number, -(number + fits - i), -1))
            seqs.extend(map(itemgetter(0), self.rows[i:fits]))
            bodies.extend(part)
            self.state[i:fits] = _run(OUT, fits - i)
            self.n_out += fits - i
            size += added
            i = fits
            if full:
                break
        self.lo = i
        return size, full

    def resolve(self, numbers: Sequence[int]) -> Sequence[int]:
        """Rows handed out, now resolved (acknowledged or dead-lettered; not yet written, they never will
        be), or, once written, no longer followed here (the disk's keys name them): the numbers that were out."""
        return self._move(numbers, OUT, DONE)

    def give_back(self, numbers: Sequence[int]) -> None:
        self._move(numbers, OUT, QUEUED)

    def place(self, cuts: list[tuple[int, int]], ids: list[int]) -> None:
        """The rows are written, as groups `cuts` (positions among the rows written) with row ids `ids`."""
        self.starts = [a for a, _ in cuts]
        self.ids = ids
        self.written = cuts[-1][1] if cuts else 0

    def disk_keys(self, numbers: Sequence[int]) -> list[DiskKey]:
        """Once placed: the disk's keys of rows written (those out when written: nothing else is followed)."""
        assert self.ids is not None
        out: list[DiskKey] = []
        if not numbers:
            return out
        positions, starts, ids = self.positions, self.starts, self.ids
        runs = [(numbers[0] - self.base, len(numbers))]
        if not consecutive(numbers) and list(numbers) != list(range(numbers[0], numbers[0] + len(numbers))):
            runs = [(number - self.base, 1) for number in numbers]
        while runs:
            index, length = runs.pop()
            at = index
            if positions is not None:  # (rows resolved before the write were not written: positions skip them)
                at = bisect_left(positions, index)
                if at + length > len(positions) or positions[at] != index \
                        or positions[at + length - 1] != index + length - 1:
                    if length > 1:
                        runs += [(i, 1) for i in range(index, index + length)]
                    continue  # (a single row not written: nothing to name)
            while length > 0:
                g = bisect_right(starts, at) - 1
                stop = starts[g + 1] if g + 1 < len(starts) else self.written
                step = min(length, stop - at)
                key = (ids[g] << _SHIFT) + at - starts[g]
                out.extend(range(key, key + step))
                at += step
                length -= step
        return out

    def _move(self, numbers: Sequence[int], old: int, new: int) -> Sequence[int]:
        state = self.state
        moved: Sequence[int]
        first = numbers[0] - self.base if numbers else 0
        length = len(numbers)
        if length > 1 and first >= 0 and first + length <= len(state) \
                and numbers[-1] - self.base == first + length - 1 \
                and (consecutive(numbers) or list(numbers) == list(range(numbers[0], numbers[0] + length))) \
                and state[first:first + length] == _run(old, length):
            state[first:first + length] = _run(new, length)
            moved = range(numbers[0], numbers[0] + length)
            low = first
        else:
            low = len(state)
            found: list[int] = []
            for number in dict.fromkeys(numbers):
                i = number - self.base
                if 0 <= i < len(state) and state[i] == old:
                    state[i] = new
                    found.append(number)
                    low = min(low, i)
            moved = found
        if old == OUT:
            self.n_out -= len(moved)
        if new == DONE:
            self.n_done += len(moved)
        elif new == QUEUED:
            self.lo = min(self.lo, low)
        return moved
