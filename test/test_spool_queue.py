"""The spool's group bookkeeping (`spool_queue.GroupQueue`, a state byte per event, runs handled as slices)
against a plain model of one state per event, under any sequence of takes, give-backs and resolutions:
the same events are handed out in the same order, and the same ones resolved, counted and left."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from openmonetize.lib.spool_queue import GroupQueue, disk_key, key_index, key_row


class Model:
    def __init__(self) -> None:
        self.groups: dict[int, list[tuple[int, bytes, str]]] = {}  # row -> [(seq, body, state)]

    def add(self, row_id: int, seqs: list[int], bodies: list[bytes]) -> None:
        self.groups[row_id] = [(s, b, "queued") for s, b in zip(seqs, bodies, strict=True)]

    def take(self, limit: int, max_bytes: int) -> list[int]:
        keys: list[int] = []
        size = 0
        for row_id, events in self.groups.items():
            for i, (seq, body, state) in enumerate(events):
                if state != "queued":
                    continue
                if len(keys) >= limit or (keys and size + len(body) + 1 > max_bytes):
                    return keys
                keys.append(disk_key(row_id, i))
                size += len(body) + 1
                events[i] = (seq, body, "out")
        return keys

    def give_back(self, keys: list[int]) -> None:
        for key in keys:
            events = self.groups.get(key_row(key))
            if events is not None and events[key_index(key)][2] == "out":
                seq, body, _ = events[key_index(key)]
                events[key_index(key)] = (seq, body, "queued")

    def resolve(self, keys: list[int]) -> tuple[list[int], dict[int, list[int]], int]:
        finished: list[int] = []
        partial: dict[int, list[int]] = {}
        count = 0
        for key in keys:
            row_id, index = key_row(key), key_index(key)
            events = self.groups.get(row_id)
            if events is None or events[index][2] != "out":
                continue
            seq, body, _ = events[index]
            events[index] = (seq, body, "done")
            count += 1
            if all(state == "done" for _, _, state in events):
                del self.groups[row_id]
                finished.append(row_id)
                partial.pop(row_id, None)
            else:
                partial.setdefault(row_id, []).append(index)
        return finished, partial, count

    def low(self) -> float:
        return min((seq for events in self.groups.values() for seq, _, state in events if state != "done"),
                   default=math.inf)

    def counts(self) -> tuple[int, int]:
        states = [state for events in self.groups.values() for _, _, state in events]
        return len(states) - states.count("done"), states.count("out")


operations = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.integers(1, 40), min_size=1, max_size=70)),  # body lengths
    st.tuples(st.just("take"), st.integers(1, 150), st.integers(1, 3000)),
    st.tuples(st.just("ack"), st.integers(0, 10), st.sampled_from(["all", "some", "reversed", "twice"])),
    st.tuples(st.just("give_back"), st.integers(0, 10), st.sampled_from(["all", "some"])),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(operations, st.randoms(use_true_random=False))
def test_group_queue_matches_a_state_per_event(ops, random):
    queue, model = GroupQueue(cache_bytes=1 << 20), Model()
    batches: list[list[int]] = []
    row_id, seq = 0, 0
    for op in ops:
        if op[0] == "add":
            row_id += 1
            seqs = list(range(seq, seq + len(op[1])))
            random.shuffle(seqs)  # (seqs within a group need not be ordered)
            seq += len(op[1])
            bodies = [b"x" * n for n in op[1]]
            queue.add(row_id, seqs, bodies)
            model.add(row_id, seqs, bodies)
        elif op[0] == "take":
            keys: list[int] = []
            seqs_out: list[int] = []
            bodies_out: list[bytes] = []
            load = lambda row: [body for _, body, _ in model.groups[row]]  # noqa: E731 (the file's rows)
            _, error = queue.take(op[1], op[2], 0, load, keys, seqs_out, bodies_out)
            assert error is None
            assert keys == model.take(op[1], op[2])
            expected = [_event(model, key) for key in keys]
            assert seqs_out == [s for s, _ in expected] and bodies_out == [b for _, b in expected]
            if keys:
                batches.append(keys)
        elif batches:
            keys = batches.pop(op[1] % len(batches))
            if op[2] == "some":
                keys = [k for k in keys if random.random() < 0.5]
            elif op[2] == "reversed":
                keys = keys[::-1]
            elif op[2] == "twice":
                keys = keys + keys
            if op[0] == "ack":
                finished, partial, count = queue.resolve(keys)
                want_finished, want_partial, want_count = model.resolve(keys)
                assert (finished, count) == (want_finished, want_count)
                assert {r: sorted(i) for r, i in partial.items() if r not in finished} == \
                    {r: sorted(i) for r, i in want_partial.items()}
            else:
                queue.give_back(keys)
                model.give_back(keys)
                assert not any(map(queue.holds, keys))
        assert (queue.queued, queue.out) == model.counts()
        assert queue.low() == model.low()
        assert set(queue.groups) == set(model.groups)


def _event(model: Model, key: int) -> tuple[int, bytes]:
    seq, body, _ = model.groups[key_row(key)][key_index(key)]
    return seq, body
