"""The spool's bookkeeping on the delivery thread, per event, without I/O: groups of a written commit join
the queue (`GroupQueue.add`), are handed out in batches of 1000 (`take`) and acknowledged (`resolve`).

    .venv/bin/python bench/spool_queue.py [--events 3000] [--rounds 300]

Runs against whichever `openmonetize` is imported (for a before/after, run it with `PYTHONPATH` set to
another checkout, from outside this one).
"""

from __future__ import annotations

import argparse
import json
import time
from array import array

import openmonetize.lib.spool_queue as spool_queue
from openmonetize.lib.spool_format import cut
from openmonetize.lib.spool_queue import GroupQueue

BODY = json.dumps({"event_type": "TOKEN_USAGE", "event_id": "0190f1c2-aaaa-7bbb-8ccc-000000000000",
                   "customer_id": "cust_1", "feature_id": "chat", "provider": "openai", "model": "gpt-4o",
                   "input_tokens": 1200, "output_tokens": 350, "timestamp": "2026-11-01T08:00:00.123Z"},
                  separators=(",", ":")).encode()
KEYS_ARE_INTS = hasattr(spool_queue, "disk_key")  # (this branch: seqs stay a list; before: an array each)


def one_commit(queue: GroupQueue, row: int, seq: int, events: int) -> tuple[float, float, float, int]:
    seqs = list(range(seq, seq + events))
    bodies = [BODY + b"" for _ in range(events)]
    cuts = cut(bodies)
    started = time.perf_counter()
    for offset, (a, b) in enumerate(cuts):
        queue.add(row + offset, seqs[a:b] if KEYS_ARE_INTS else array("q", seqs[a:b]), bodies[a:b])
    added = time.perf_counter()
    batches = []
    while True:
        keys: list[object] = []
        queue.take(1000, 5 << 20, 0, lambda _row: [], keys, [], [])  # type: ignore[arg-type]
        if not keys:
            break
        batches.append(keys)
    taken = time.perf_counter()
    for keys in batches:
        queue.resolve(keys)  # type: ignore[arg-type]
    return added - started, taken - added, time.perf_counter() - taken, len(cuts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000, help="events per commit")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    queue = GroupQueue(8 << 20)
    totals = [0.0, 0.0, 0.0]
    row, seq, warm = 1, 0, 20
    for i in range(args.rounds + warm):
        parts = one_commit(queue, row, seq, args.events)
        row, seq = row + parts[3], seq + args.events
        if i >= warm:
            totals = [t + p for t, p in zip(totals, parts[:3], strict=True)]
    per = [t / (args.rounds * args.events) * 1e6 for t in totals]
    print(f"us per event: groups join the queue {per[0]:.3f}, take {per[1]:.3f}, acknowledge {per[2]:.3f},"
          f" together {sum(per):.3f}")


if __name__ == "__main__":
    main()
