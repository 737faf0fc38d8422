"""A full batch's request body: the envelope joined around the events (three large copies) against the one join
`Batch.request_body` does, side by side in one run.

    .venv/bin/python bench/batch_body.py [--events 1000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import timeit

from openmonetize.lib.buffers import Batch
from openmonetize.models.token_usage_event import TokenUsageEvent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bodies = [TokenUsageEvent(customer_id="cust_1", feature_id="chat", provider="openai", model="gpt-4o",
                              input_tokens=100 + i, output_tokens=10).to_json().encode() for i in range(args.events)]
    batch = Batch(bodies, list(range(len(bodies))), list(range(len(bodies))))

    def three_copies() -> bytes:
        return b'{"events":[' + b",".join(bodies) + b"]}"

    assert three_copies() == batch.request_body()
    number = 2000
    results: dict[str, float] = {}
    builders = (("prefix + join + suffix", three_copies), ("Batch.request_body (one join)", batch.request_body))
    for name, build in builders:
        results[name] = min(timeit.repeat(build, number=number, repeat=args.rounds)) / number * 1e6
    size = len(batch.request_body())
    print(f"{args.events} events, {size:,} bytes per body; best of {args.rounds} rounds of {number}")
    for name, micros in results.items():
        print(f"  {name:<32} {micros:8.1f} us")
    first, second = results.values()
    print(f"  one join takes {second / first:.2f}x the time of three copies")


if __name__ == "__main__":
    main()
