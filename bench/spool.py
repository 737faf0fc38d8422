"""Spool mode against memory mode, side by side in one run, both posting to the same loopback sink
(bench/sink.py, another process), default settings otherwise.

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python bench/spool.py [--calls 20000] [--rounds 5] [--throughput 50000] [--events 1000000]
                                    [--commit-interval S] [--without-flush-start-commit]

1. caller cost per `track_token_usage` call, the delivery threads running: the caller thread's CPU
   (`time.thread_time`) and the wall time per call (which adds the waits for the GIL);
2. events/s from the first call to an acknowledged flush (`--throughput` events per round), and the share
   of the spool's tracked events it wrote to disk (the others were acknowledged before their commit);
3. the spool file's size on disk (database + WAL) while `--events` events are tracked and delivered, then
   right after the acknowledged flush and a second later, the client still running (goal: < 10 MB);
4. giving a file's free space back once half or all of its events are delivered: the spool's way
   (`auto_vacuum=INCREMENTAL`, `incremental_vacuum` in steps), a full `VACUUM`, or keeping the free pages
   for reuse (the file never shrinks).

Rounds interleave the two modes so that the machine's load drifts over both alike; medians are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

SINK = str(Path(__file__).with_name("sink.py"))
KEY = "bench-key"


def start_sink() -> tuple[subprocess.Popen[str], str]:
    sink = subprocess.Popen([sys.executable, SINK, "--port", "0", "--count"], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    return sink, f"http://127.0.0.1:{sink.stdout.readline().strip()}"


def sink_events(url: str) -> int:
    with urllib.request.urlopen(f"{url}/stats") as response:
        return int(json.load(response)["events"])


def spool_bytes(directory: Path) -> int:
    """Every spool file's database and WAL (and index), as `du` would count them (apparent size)."""
    return sum(p.stat().st_size for p in directory.iterdir() if ".om-spool" in p.name and not p.name.endswith(".lock"))


def make_clients(url: str, spool: Path, commit_interval: float | None = None,
                 ) -> dict[str, tuple[Callable[[int], object], Callable[..., bool]]]:
    from openmonetize import OpenMonetize

    spool_options: dict[str, Any] = {} if commit_interval is None else {"spool_commit_interval": commit_interval}
    made = {"memory": OpenMonetize(api_key=KEY, base_url=url),
            "spool": OpenMonetize(api_key=KEY, base_url=url, spool_dir=spool, **spool_options)}
    out: dict[str, tuple[Callable[[int], object], Callable[..., bool]]] = {}
    for name, om in made.items():
        def track(i: int, om: OpenMonetize = om) -> object:
            return om.track_token_usage(customer_id="cust_1", feature_id="chat", provider="openai", model="gpt-4o",
                                        input_tokens=1200, output_tokens=i)
        out[name] = (track, om.flush)
        om.start()
    return out


def caller_cost(runs: dict[str, tuple[Callable[[int], object], Callable[..., bool]]], calls: int,
                rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (caller-thread CPU, wall time) per call, in us: the wall time adds the waits for the GIL."""
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    wall: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (track, flush) in runs.items():
            started, started_wall = time.thread_time(), time.perf_counter()
            for i in range(calls):
                track(i)
            cpu[name].append((time.thread_time() - started) / calls * 1e6)
            wall[name].append((time.perf_counter() - started_wall) / calls * 1e6)
            assert flush()
    return {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in runs}


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process, by name (Linux: /proc)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            name = names.get(int(tid), "other")
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


FLUSHING = [False]  # set by `throughput` while its flush() waits


def count_written() -> list[int]:
    """Counters of the events the spool writes to disk, in all and while a flush waits (`FLUSHING`): around
    `spool_writer.write`, which every write of events goes through (the writer thread's, and the delivery
    thread's when it writes itself)."""
    from openmonetize.lib import buffers, spool_writer

    counter = [0, 0]
    original = spool_writer.write

    def write(db: sqlite3.Connection, job: spool_writer.WriteJob) -> None:
        counter[0] += len(job.rows)
        counter[1] += len(job.rows) if FLUSHING[0] else 0
        original(db, job)

    for module in (spool_writer, buffers):  # (buffers imports it by name)
        setattr(module, "write", write)  # noqa: B010
    return counter


def throughput(runs: dict[str, tuple[Callable[[int], object], Callable[..., bool]]], url: str, events: int,
               rounds: int) -> tuple[dict[str, tuple[float, float]], dict[str, dict[str, float]]]:
    """name -> (events/s, share delivered); and name -> thread -> CPU us per event (all rounds)."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    delivered: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, dict[str, float]] = {name: {} for name in runs}
    for _ in range(rounds):
        for name, (track, flush) in runs.items():
            before = sink_events(url)
            cpu_before = thread_cpu()
            started = time.perf_counter()
            for i in range(events):
                track(i)
            FLUSHING[0] = True
            assert flush()
            FLUSHING[0] = False
            rates[name].append(events / (time.perf_counter() - started))
            for thread, seconds in thread_cpu().items():
                used = (seconds - cpu_before.get(thread, 0.0)) / (events * rounds) * 1e6
                cpu[name][thread] = cpu[name].get(thread, 0.0) + used
            delivered[name].append((sink_events(url) - before) / events)
    return {name: (statistics.median(rates[name]), min(delivered[name])) for name in runs}, cpu


def file_size(track: Callable[[int], object], flush: Callable[..., bool], spool: Path, events: int) -> dict[str, float]:
    """MB on disk: the peak while tracking `events` (sampled every 10,000), after the flush, a second later."""
    peak = 0
    started = time.perf_counter()
    for i in range(events):
        track(i)
        if i % 10_000 == 0:
            peak = max(peak, spool_bytes(spool))
    assert flush(600)
    elapsed = time.perf_counter() - started
    after = spool_bytes(spool)
    time.sleep(1.0)  # (a benchmark, not a test: the client keeps running meanwhile)
    later = spool_bytes(spool)
    return {"peak": max(peak, after) / 1e6, "flushed": after / 1e6, "later": later / 1e6, "rate": events / elapsed}


def reclaim(events: int) -> list[tuple[str, float, float, float]]:
    """How a spool file of `events` events gives its space back once `share` of them are delivered, three
    ways, each on a fresh file: (strategy, share delivered, ms to give it back, MB left (db + WAL))."""
    from openmonetize.lib.buffers import SpoolBuffer
    from openmonetize.lib.spool_writer import give_space_back

    body = json.dumps({"event_type": "TOKEN_USAGE", "event_id": "0190f1c2-aaaa-7bbb-8ccc-000000000000",
                       "customer_id": "cust_1", "feature_id": "chat", "provider": "openai", "model": "gpt-4o",
                       "input_tokens": 1200, "output_tokens": 350, "timestamp": "2026-11-01T08:00:00.123Z"},
                      separators=(",", ":")).encode()
    out = []
    for share in (0.5, 1.0):
        for strategy in ("incremental_vacuum", "VACUUM", "reuse only"):
            with tempfile.TemporaryDirectory() as directory:
                buffer = SpoolBuffer(directory)
                buffer.open()
                buffer.intake.extend((i, body) for i in range(events))
                buffer.commit()
                delivered = 0
                while delivered < events * share and (batch := buffer.take(1000, 1 << 30)) is not None:
                    buffer.ack(batch)
                    delivered += len(batch)
                db = buffer._db
                assert db is not None
                started = time.perf_counter()
                if strategy == "incremental_vacuum":
                    while not give_space_back(db):
                        pass
                elif strategy == "VACUUM":
                    db.execute("VACUUM")
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                ms = (time.perf_counter() - started) * 1e3
                out.append((strategy, share, ms, spool_bytes(Path(directory)) / 1e6))
                buffer.close(delete_if_empty=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--throughput", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reclaim", type=int, default=200_000, help="events in the file of row 4 (0: skip it)")
    parser.add_argument("--commit-interval", type=float, default=None,
                        help="the spool client's spool_commit_interval (default: the SDK's, 0.05 s)")
    parser.add_argument("--without-flush-start-commit", action="store_true",
                        help="an experiment, not the SDK: the commit a flush makes as it begins left out (its"
                             " promise: what it waits for is on disk while it waits), to measure what it costs")
    args = parser.parse_args()
    if args.without_flush_start_commit:
        from openmonetize.lib import delivery

        due = delivery.commit_due
        delivery.commit_due = lambda *a, **k: due(*a, **{**k, "flush_began": False})

    sink, url = start_sink()
    try:
        with tempfile.TemporaryDirectory() as spool_dir:
            spool = Path(spool_dir)
            runs = make_clients(url, spool, args.commit_interval)
            cost = caller_cost(runs, args.calls, args.rounds)
            written = count_written()
            rates, cpu = throughput(runs, url, args.throughput, args.rounds)
            written_share = written[0] / (args.throughput * args.rounds)
            flush_share = written[1] / (args.throughput * args.rounds)
            size = file_size(*runs["spool"], spool, args.events) if args.events else None
    finally:
        sink.terminate()
        sink.wait()
    reclaimed = reclaim(args.reclaim) if args.reclaim else []

    print(f"1. caller cost per track_token_usage (median of {args.rounds} rounds of {args.calls:,}):"
          " thread CPU, wall")
    for name, (us, wall_us) in cost.items():
        print(f"   {name:<7} {us:7.2f} us CPU {wall_us:7.2f} us wall")
    print(f"   ratio spool/memory {cost['spool'][0] / cost['memory'][0]:.2f} CPU (goal <= 1.2),"
          f" {cost['spool'][1] / cost['memory'][1]:.2f} wall")
    print(f"2. events/s from first call to acknowledged flush ({args.throughput:,} events, median of {args.rounds})")
    for name, (rate, share) in rates.items():
        print(f"   {name:<7} {rate:10,.0f} events/s   delivered {share:.1%}")
    print(f"   ratio spool/memory {rates['spool'][0] / rates['memory'][0]:.2f}  (goal >= 0.9)")
    print(f"   spool: {written_share:.0%} of the events tracked were written to disk (all rounds), {flush_share:.0%}"
          " while the flush waited (its commit writes everything not yet acknowledged)")
    print("   CPU per event by thread, us (all rounds; includes the other client's idle threads):")
    for name, threads in cpu.items():
        shown = ", ".join(f"{t.removeprefix('openmonetize-')} {us:.2f}" for t, us in sorted(threads.items())
                          if us >= 0.05)
        print(f"   {name:<7} {shown}")
    if size is not None:
        print(f"3. spool file + WAL, {args.events:,} events tracked and delivered ({size['rate']:,.0f} events/s),"
              " client running")
        print(f"   peak {size['peak']:.1f} MB, after the flush {size['flushed']:.1f} MB, 1 s later"
              f" {size['later']:.1f} MB  (goal < 10 MB)")
    if reclaimed:
        print(f"4. giving space back, a file of {args.reclaim:,} events once part of them is delivered")
        for strategy, share, ms, mb in reclaimed:
            print(f"   {share:4.0%} delivered  {strategy:<18} {ms:8.1f} ms  {mb:7.1f} MB left")


if __name__ == "__main__":
    main()
