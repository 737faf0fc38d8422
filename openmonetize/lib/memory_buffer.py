"""Where tracked events wait for delivery in memory only: the queue a client without a spool uses, and the
`Batch` a request takes from any buffer (the spool's, `buffers.SpoolBuffer`, extends this one).

Callers append `(seq, body)` to `intake` (a deque: appends are atomic and cheap), `body` being the
event's JSON, serialized once when it was tracked; everything else is done by the delivery thread, which
owns the buffer. `seq` orders events so `flush()` can tell when all events tracked before it are
resolved. Queued events are bytes, not model objects: a fifth of the memory, and nothing for the
garbage collector to traverse while thousands wait. Apart from the spool's module so that a client
without a spool never imports SQLite and the spool's modules.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from openmonetize.lib.failures import DeliveryFailure

Entry = tuple[int, bytes]  # (seq, the event as JSON)
#: runs the commit it is given (between the chunks of a spool's adoption), and does what must follow it
AroundCommit = Callable[[Callable[[], None]], None]


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
        """`{"events":[...]}` in one join: the envelope rides on the first and last event, so the ~240 KB of a
        full batch is copied once (prefix + join + suffix copied it three times, each a fresh large allocation)."""
        parts = self.bodies.copy()
        parts[0] = b'{"events":[' + parts[0]
        parts[-1] = parts[-1] + b"]}"
        return b",".join(parts)

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

    def commit(self, due: bool = True, *, young: bool = True) -> None:
        pass

    def uncommitted(self) -> bool:
        """Whether a commit would have anything to do (nothing in memory: it never does)."""
        return False

    def written(self) -> bool:
        """Whether every commit made due so far has completed (nothing in memory is ever written: always)."""
        return True

    def pace(self, notify: Callable[[], None]) -> None:
        """A delivery loop drives this buffer: it says at each `commit` whether one is `due`, and wants
        `notify` called when something it waits for happened on another thread (see SpoolBuffer)."""

    def ready(self) -> int:
        """Events `take` can hand out now."""
        return len(self.intake)

    def hands_out_unwritten(self) -> bool:
        """Whether `take` hands out events just tracked, without waiting for a commit."""
        return True

    def adopt_orphans(self, around_commit: AroundCommit | None = None) -> int:
        return 0

    def take(self, limit: int, max_bytes: int) -> Batch | None:
        """Up to `limit` events whose JSON adds up to at most `max_bytes` (always at least one)."""
        intake = self.intake
        pop = intake.popleft
        # only this thread takes, so `len` events are there; sizes are summed once, in C: a batch nearly never
        # reaches `max_bytes` (1000 token events are ~240 KB), and when it does the tail goes back
        entries = [pop() for _ in range(min(limit, len(intake)))]
        if not entries:
            return None
        seqs = [seq for seq, _ in entries]
        bodies = [body for _, body in entries]
        if sum(map(len, bodies)) + len(bodies) > max_bytes:
            size, keep = 0, 0
            for body in bodies:
                size += len(body) + 1
                if keep and size > max_bytes:
                    break
                keep += 1
            intake.extendleft(reversed(entries[keep:]))
            seqs, bodies = seqs[:keep], bodies[:keep]
        return Batch(bodies, seqs, seqs)

    def give_back(self, batch: Batch) -> None:
        self.intake.extendleft(reversed(list(zip(batch.seqs, batch.bodies, strict=True))))

    def ack(self, batch: Batch) -> None:
        pass

    def dead_letter(self, batch: Batch, failure: DeliveryFailure) -> bool:
        """Resolve events refused for good, keeping them if this buffer can; False when it did not keep them
        (memory has nowhere to: the caller's report is their only record)."""
        return False

    @property
    def dead_letters(self) -> int:
        return 0

    @property
    def held(self) -> int:
        """Events a spool keeps in memory because its disk refused them (none here: all are in `intake`)."""
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
