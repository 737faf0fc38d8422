"""OpenMonetize against Segment's analytics-python (the most used Python event SDK), side by side in one
run, default settings, both posting to the same loopback sink (bench/sink.py, another process).

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python bench/track.py [--calls 5000] [--rounds 5] [--events 10000] [--outage 1000000]

1. caller-thread cost of one tracking call, wall and the calling thread's CPU (background threads running,
   as in a service; `--calls` stays below Segment's 10,000-event queue, which drops the rest cheaply);
2. events delivered per second from the first call to an acknowledged flush (Segment with a queue that holds
   them all, so it drops none);
3. bytes per queued event while the server is down (tracemalloc, in a fresh process per client);
4. peak RSS while `--outage` events are tracked with a spool during an outage, then all delivered when
   the server returns (OpenMonetize only: Segment has no spool and drops what exceeds its 10,000-event
   queue).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

SINK = str(Path(__file__).with_name("sink.py"))
KEY = "bench-key"


def start_sink(port: int = 0) -> tuple[subprocess.Popen[str], str]:
    sink = subprocess.Popen([sys.executable, SINK, "--port", str(port), "--count"], stdout=subprocess.PIPE,
                            text=True)
    assert sink.stdout is not None
    return sink, f"http://127.0.0.1:{sink.stdout.readline().strip()}"


def sink_events(url: str) -> int:
    with urllib.request.urlopen(f"{url}/stats") as response:
        return int(json.load(response)["events"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clients(url: str, segment_queue: int = 10_000) -> dict[str, tuple[Callable[[int], object], Callable[[], object]]]:
    """name -> (track one event, flush); Segment's queue holds `segment_queue` events (its default 10,000)"""
    from segment.analytics import Client as SegmentClient

    from openmonetize import OpenMonetize

    om = OpenMonetize(api_key=KEY, base_url=url)
    segment = SegmentClient(write_key=KEY, host=url, max_queue_size=segment_queue)

    def om_track(i: int) -> object:
        return om.track_token_usage(customer_id="cust_1", feature_id="chat", provider="openai", model="gpt-4o",
                                    input_tokens=1200, output_tokens=i)

    def segment_track(i: int) -> object:
        return segment.track(user_id="cust_1", event="token_usage", properties={
            "feature_id": "chat", "provider": "openai", "model": "gpt-4o", "input_tokens": 1200, "output_tokens": i})

    return {"OpenMonetize": (om_track, lambda: om.flush()), "Segment": (segment_track, segment.flush)}


def caller_cost(url: str, calls: int, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (wall us, calling thread's CPU us) per call, medians over rounds (clients alternate)."""
    runs = clients(url)
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (track, flush) in runs.items():
            started, started_cpu = time.perf_counter(), time.thread_time()
            for i in range(calls):
                track(i)
            cpu[name].append((time.thread_time() - started_cpu) / calls * 1e6)
            wall[name].append((time.perf_counter() - started) / calls * 1e6)
            flush()
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in runs}


def throughput(url: str, events: int, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (events delivered per second, first call to acknowledged flush; share of events the sink
    received). Segment's queue is made big enough for all `events`: what it would drop is not a rate."""
    runs = clients(url, segment_queue=events + 1)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    delivered: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (track, flush) in runs.items():
            before = sink_events(url)
            started = time.perf_counter()
            for i in range(events):
                track(i)
            flush()
            elapsed = time.perf_counter() - started
            received = sink_events(url) - before
            rates[name].append(received / elapsed)
            delivered[name].append(received / events)
    return {name: (statistics.median(rates[name]), min(delivered[name])) for name in runs}


QUEUED_MEMORY = """
import json, sys, tracemalloc
tracemalloc.start()
which, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if which == "OpenMonetize":
    from openmonetize import OpenMonetize
    client = OpenMonetize(api_key="k", base_url=url, max_queue_size=n + 1)
    track = lambda i: client.track_token_usage(customer_id="cust_1", feature_id="chat", provider="openai",
                                               model="gpt-4o", input_tokens=1200, output_tokens=i)
    track(0)
else:
    from segment.analytics import Client
    client = Client(write_key="k", host=url, max_queue_size=n + 1)  # default retries: it keeps what it queued
    track = lambda i: client.track(user_id="cust_1", event="token_usage", properties={
        "feature_id": "chat", "provider": "openai", "model": "gpt-4o", "input_tokens": 1200, "output_tokens": i})
    track(0)
before = tracemalloc.take_snapshot()
for i in range(n):
    track(i)
after = tracemalloc.take_snapshot()
print(sum(s.size_diff for s in after.compare_to(before, "filename")) / n)
"""


def bytes_per_queued_event(events: int) -> dict[str, float]:
    down = f"http://127.0.0.1:{free_port()}"
    result = {}
    for name in ("OpenMonetize", "Segment"):
        out = subprocess.run([sys.executable, "-c", QUEUED_MEMORY, name, down, str(events)], check=True,
                             capture_output=True, text=True).stdout
        result[name] = float(out)
    return result


OUTAGE = """
import json, os, resource, subprocess, sys, time
from openmonetize import OpenMonetize
sink_script, spool, port, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
url = f"http://127.0.0.1:{port}"
om = OpenMonetize(api_key="k", base_url=url, spool_dir=spool)
started = time.perf_counter()
for i in range(n):
    om.track_token_usage(customer_id="cust_1", feature_id="chat", provider="openai", model="gpt-4o",
                         input_tokens=1200, output_tokens=i)
tracked = time.perf_counter()
rss_tracking = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
time.sleep(1)
spooled = om.stats()["spooled"]
sink = subprocess.Popen([sys.executable, sink_script, "--port", port, "--count"], stdout=subprocess.PIPE, text=True)
sink.stdout.readline()
back = time.perf_counter()
ok = om.flush(1800)
done = time.perf_counter()
import urllib.request
received = json.load(urllib.request.urlopen(url + "/stats"))["events"]
sink.terminate()
print(json.dumps(dict(ok=ok, tracked_s=tracked - started, spooled=spooled, deliver_s=done - back,
                      received=received, rss_tracking_mb=rss_tracking / 1024,
                      rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def outage(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as spool:
        out = subprocess.run([sys.executable, "-c", OUTAGE, SINK, spool, str(free_port()), str(events)],
                             check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5_000)  # below Segment's 10,000-event queue: no drops
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--outage", type=int, default=1_000_000)
    args = parser.parse_args()

    sink, url = start_sink()
    try:
        cost = caller_cost(url, args.calls, args.rounds)
        rates = throughput(url, args.events, args.rounds)
    finally:
        sink.terminate()
        sink.wait()
    memory = bytes_per_queued_event(args.events)

    print(f"1. caller-thread cost per tracking call (median of {args.rounds} rounds of {args.calls:,})")
    for name, (us, cpu_us) in cost.items():
        print(f"   {name:<13} {us:7.2f} us wall  {cpu_us:7.2f} us CPU of the calling thread")
    print(f"   ratio OpenMonetize/Segment {cost['OpenMonetize'][0] / cost['Segment'][0]:.3f} wall, "
          f"{cost['OpenMonetize'][1] / cost['Segment'][1]:.3f} CPU  (goal <= 0.10)")
    print(f"2. events/s from first call to acknowledged flush ({args.events:,} events, median of {args.rounds})")
    for name, (rate, share) in rates.items():
        print(f"   {name:<13} {rate:10,.0f} events/s   delivered {share:.1%}")
    print(f"   ratio OpenMonetize/Segment {rates['OpenMonetize'][0] / rates['Segment'][0]:.2f}  (goal >= 10)")
    print(f"3. bytes per queued event, server down ({args.events:,} events, tracemalloc)")
    for name, size in memory.items():
        print(f"   {name:<13} {size:8,.0f} bytes")
    if args.outage:
        result = outage(args.outage)
        print(f"4. {args.outage:,} events tracked with a spool while the server was down, then delivered")
        print(f"   tracked in {result['tracked_s']:.1f} s, {result['spooled']:,} in the spool; delivered "
              f"{result['received']:,} in {result['deliver_s']:.1f} s after the server came back (flush ok: "
              f"{result['ok']})")
        print(f"   peak RSS {result['rss_peak_mb']:.0f} MB (while tracking: {result['rss_tracking_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
