"""`openmonetize send` against a plain loop of `EventsApi.ingest` (batches of 1000), side by side in one run,
plus the peak RSS of `send` for a large file.

Both post the same JSON lines file (a usage log in time order, no event_id) to `openmonetize serve` (another
process, SQLite), started afresh on an empty database for every run; each client runs in a fresh process
(interpreter start and imports count for both), alternating which goes first. The plain loop is what a user
would write: `json.loads` each line, `ingest(events=batch)` every 1000 lines (the dicts are validated by
`ingest`, which gives them new UUIDv7s). Peak RSS is `getrusage(RUSAGE_CHILDREN)` of a helper process whose
only child is the `send` run. Last, the server CPU it takes to store the file with time-ordered against
random event ids.

Then, in this process, what `send` spends per line before tracking it, part by part, and what each client's
process costs apart from its lines (a one-line file) and the modules it imports beyond the plain loop's
(`--sink null` too).

With `--sink null` both post to bench/sink.py instead (another process that answers every batch at once and
stores nothing), so the figures are the clients' own cost; only the throughput rows are measured then.

    .venv/bin/python bench/send.py [--lines 100000] [--rounds 3] [--rss-lines 1000000] [--sink serve|null]
                                   [--bytecode as-is|cached]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

KEY = "bench-key"
OM = str(Path(sys.executable).with_name("openmonetize"))


def write_events(path: Path, lines: int) -> None:
    """Valid events only (the plain loop has no way to skip a bad line): a third of each type, in time order
    (a usage log, 20 events a second)."""
    rng = random.Random(5)
    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    with path.open("w") as out:
        for i in range(lines):
            customer = f"cust_{rng.randrange(200)}"
            ts = (start + timedelta(milliseconds=50 * i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if i % 3 == 0:
                event = {"event_type": "TOKEN_USAGE", "customer_id": customer, "feature_id": "chat",
                         "provider": "openai", "model": "gpt-4o", "input_tokens": rng.randrange(100, 9000),
                         "output_tokens": rng.randrange(10, 900), "timestamp": ts,
                         "metadata": {"request_id": f"req_{i}"}}
            elif i % 3 == 1:
                event = {"event_type": "IMAGE_GENERATION", "customer_id": customer, "feature_id": "images",
                         "provider": "openai", "model": "gpt-image-1", "image_count": 1 + i % 4, "timestamp": ts}
            else:
                event = {"event_type": "CUSTOM", "customer_id": customer, "feature_id": "pdf", "unit_type": "pages",
                         "quantity": 1 + i % 30, "timestamp": ts}
            out.write(json.dumps(event) + "\n")


PLAIN_LOOP = """
import json, sys
from openmonetize import ApiClient, EventsApi
from openmonetize.configuration import Configuration

config = Configuration(host=sys.argv[2], access_token=sys.argv[3])
api = EventsApi(ApiClient(config))
batch, sent = [], 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        batch.append(json.loads(line))
        if len(batch) == 1000:
            sent += api.ingest(events=batch).accepted
            batch = []
if batch:
    sent += api.ingest(events=batch).accepted
print(sent)
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed, result.stdout


def sent_of(summary: str) -> int:
    match = re.search(r"^  sent\s+([\d,]+)", summary, flags=re.M)
    assert match, summary
    return int(match.group(1).replace(",", ""))


def peak_rss_mb(path: Path, url: str, env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one `send` run, measured in a helper whose only child it is."""
    helper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        f"subprocess.run([{OM!r}, 'send', {str(path)!r}, '--base-url', {url!r}],"
        " check=True, capture_output=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", helper], capture_output=True, text=True, env=env, check=True).stdout
    rss, seconds = out.split()
    return float(rss), float(seconds)


class Server:
    """A fresh `openmonetize serve` on an empty database, so every measurement starts from the same state;
    with `null`, a fresh bench/sink.py (stores nothing, answers at once)."""

    def __init__(self, work: Path, name: str, env: dict[str, str], null: bool = False) -> None:
        if null:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sink.py"))],
                                         stdout=subprocess.PIPE, text=True, env=env)
            assert self.proc.stdout is not None
            self.url = f"http://127.0.0.1:{self.proc.stdout.readline().strip()}"
        else:
            self.proc = subprocess.Popen([OM, "serve", "--db", str(work / f"{name}.db"), "--port", "0"],
                                         stdout=subprocess.PIPE, text=True, env=env)
            assert self.proc.stdout is not None
            match = re.search(r"listening on (\S+)", self.proc.stdout.readline())
            assert match
            self.url = match.group(1)
        self.cpu_seconds = 0.0

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.cpu_seconds = server_cpu_seconds(self.proc.pid)
        self.proc.terminate()
        self.proc.wait()


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_ids(source: Path, target: Path, make_id: Callable[[], str]) -> None:
    """The same events, each with an explicit event_id from `make_id`, in line order."""
    with source.open() as lines, target.open("w") as out:
        for line in lines:
            out.write(json.dumps({"event_id": make_id(), **json.loads(line)}) + "\n")


def id_order(work: Path, source: Path, env: dict[str, str], rounds: int) -> None:
    """Server CPU to store the file with time-ordered ids (UUIDv7, as the SDK's and `send`'s derived ids
    are) against random ones (UUIDv4): why `send` derives time-ordered ids."""
    from openmonetize.lib.event_ids import new_event_id

    files = {"time-ordered": work / "ordered.jsonl", "random": work / "random.jsonl"}
    with_ids(source, files["time-ordered"], new_event_id)
    with_ids(source, files["random"], lambda: str(uuid.uuid4()))
    cpu: dict[str, list[float]] = {name: [] for name in files}
    for round_ in range(rounds):
        for name in (list(files) if round_ % 2 == 0 else list(files)[::-1]):
            server = Server(work, f"ids-{name}-{round_}", env)
            with server as url:
                timed([OM, "send", str(files[name]), "--base-url", url], env)
            cpu[name].append(server.cpu_seconds)
    ordered, scattered = statistics.median(cpu["time-ordered"]), statistics.median(cpu["random"])
    print(f"server CPU to store the file, median of {rounds}: time-ordered ids {ordered:.2f} s, random ids "
          f"{scattered:.2f} s; random / ordered {scattered / ordered:.2f}", flush=True)


def per_line_costs(source: Path, lines: int = 20_000) -> None:
    """µs per line, in this process, best of 3: what the loop pays to read a line (`json.loads`), what `send`
    pays (`parse_line`: decode, shape checks, derived id, model validation), and two of its parts alone."""
    from openmonetize.cli.jsonl import derive_event_id, id_namespace, parse_line
    from openmonetize.lib.event_types import MODELS_BY_TYPE

    with source.open("rb") as f:
        raw = [line for _, line in zip(range(lines), f, strict=False)]
    namespace = id_namespace()
    dicts = [json.loads(line) for line in raw]
    with_ids = [{**d, "event_id": derive_event_id(namespace, i, d)} for i, d in enumerate(dicts, 1)]

    def best(work: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return min(times) / len(raw) * 1e6

    loads = best(lambda: [json.loads(line) for line in raw])
    parse = best(lambda: [parse_line(line, i, namespace) for i, line in enumerate(raw, 1)])
    derive = best(lambda: [derive_event_id(namespace, i, d) for i, d in enumerate(dicts, 1)])
    validate = best(lambda: [MODELS_BY_TYPE[d["event_type"]].__pydantic_validator__.validate_python(dict(d))
                             for d in with_ids])
    print(f"per line, {len(raw):,} lines in this process: json.loads {loads:.1f} µs; send's parse_line {parse:.1f} µs,"
          f" of which the derived id {derive:.1f} µs ({derive / parse:.0%}) and the model's validation"
          f" {validate:.1f} µs ({validate / parse:.0%})", flush=True)
    try:  # what `send` runs per line since it writes plain lines' JSON directly (absent before: not printed)
        from openmonetize.cli.jsonl import parse_line_json
    except ImportError:
        return
    from openmonetize.lib.event_types import MODELS_BY_TYPE as models

    def to_json(d: dict[str, object]) -> bytes:
        event = models[str(d["event_type"])].__pydantic_validator__.validate_python(dict(d))
        return event.__pydantic_serializer__.to_json(event, exclude_none=True)  # type: ignore[no-any-return]

    to_event = best(lambda: [parse_line_json(line, i, namespace) for i, line in enumerate(raw, 1)])
    model = best(lambda: [to_json(d) for d in with_ids])
    print(f"per line, to the event's JSON: send's parse_line_json {to_event:.1f} µs (the model's validation and"
          f" serialization alone: {model:.1f} µs)", flush=True)


def fixed_costs(work: Path, env: dict[str, str], null: bool, runs: int = 5) -> None:
    """What each client's process costs apart from its lines: both run on a one-line file (interpreter start,
    imports, setup, the one request, shutdown), alternating, against a fresh sink of the bench's kind."""
    one = work / "one.jsonl"
    write_events(one, 1)
    seconds: dict[str, list[float]] = {"send": [], "loop": []}
    for round_ in range(runs):
        for name in ("send", "loop") if round_ % 2 == 0 else ("loop", "send"):
            with Server(work, f"one-{name}-{round_}", env, null) as url:
                cmd = [OM, "send", str(one), "--base-url", url] if name == "send" else \
                    [sys.executable, "-c", PLAIN_LOOP, str(one), url, KEY]
                seconds[name].append(timed(cmd, env)[0])
    send, loop = (statistics.median(seconds[name]) * 1000 for name in ("send", "loop"))
    print(f"a one-line file, median of {runs} fresh processes: send {send:.0f} ms, plain loop {loop:.0f} ms;"
          f" send's extra {send - loop:.0f} ms", flush=True)


# (asyncio left the list when the delivery client stopped importing it, 417e5e8; SQLite and the spool modules
# when they became imported only with a spool)
SEND_IMPORTS = ["openmonetize.lib.memory_buffer", "openmonetize.lib.delivery",
                "openmonetize.lib.exit_hooks", "openmonetize.lib.event_json", "openmonetize.lib.client", "click",
                "rich.console", "openmonetize.cli.common", "rich.table", "openmonetize.cli.main", "rich.progress",
                "openmonetize.cli.backfill"]
IMPORTS = """
import sys, time
from openmonetize import ApiClient, EventsApi
from openmonetize.configuration import Configuration
EventsApi
for name in sys.argv[1:]:
    started = time.perf_counter()
    __import__(name)
    print(name, time.perf_counter() - started)
"""


def import_costs(env: dict[str, str], runs: int = 5) -> None:
    """What `send`'s process imports beyond the plain loop's modules, module by module in the order `send`
    needs them (each one's time includes what it alone brings in), median of `runs` fresh processes."""
    times: dict[str, list[float]] = {name: [] for name in SEND_IMPORTS}
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", IMPORTS, *SEND_IMPORTS], capture_output=True, text=True,
                             env=env, check=True).stdout
        for line in out.splitlines():
            name, seconds = line.split()
            times[name].append(float(seconds) * 1000)
    medians = {name: statistics.median(values) for name, values in times.items()}
    top = sorted(medians.items(), key=lambda item: -item[1])[:8]
    print(f"send's imports beyond the plain loop's, median of {runs}: {sum(medians.values()):.0f} ms; the largest: "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in top), flush=True)


def cache_bytecode(work: Path, env: dict[str, str]) -> None:
    """Both clients' processes get the SDK's modules compiled once, ahead, in a cache of this run's own
    (`PYTHONPYCACHEPREFIX`), instead of compiling them from source at every start."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    where = "import openmonetize, os; print(os.path.dirname(openmonetize.__file__))"
    package = subprocess.run([sys.executable, "-c", where], capture_output=True, text=True, env=env,
                             check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rss-lines", type=int, default=1_000_000)
    parser.add_argument("--sink", choices=("serve", "null"), default="serve")
    parser.add_argument("--bytecode", choices=("as-is", "cached"), default="as-is",
                        help="cached: the clients' processes read the SDK's modules from a bytecode cache made before"
                             " the first round, as a pip-installed package does (else as the environment says: with"
                             " PYTHONDONTWRITEBYTECODE set, every process compiles them from source)")
    args = parser.parse_args()
    lines: int = args.lines
    null = args.sink == "null"

    work = Path(tempfile.mkdtemp(prefix="om-bench-send-"))
    env = {**os.environ, "OPENMONETIZE_API_KEY": KEY}
    env.pop("OPENMONETIZE_BASE_URL", None)
    if args.bytecode == "cached":
        cache_bytecode(work, env)
    print(f"bytecode: {args.bytecode} (PYTHONDONTWRITEBYTECODE={env.get('PYTHONDONTWRITEBYTECODE', '')!r}"
          f"{', PYTHONPYCACHEPREFIX set' if 'PYTHONPYCACHEPREFIX' in env else ''})", flush=True)
    try:
        source = work / "events.jsonl"
        write_events(source, lines)

        def send(name: str) -> float:
            with Server(work, name, env, null) as url:
                seconds, out = timed([OM, "send", str(source), "--base-url", url], env)
            assert sent_of(out) == lines, out
            return lines / seconds

        def loop(name: str) -> float:
            with Server(work, name, env, null) as url:
                seconds, out = timed([sys.executable, "-c", PLAIN_LOOP, str(source), url, KEY], env)
            assert int(out) == lines, out
            return lines / seconds

        send_rates: list[float] = []
        loop_rates: list[float] = []
        for round_ in range(args.rounds):
            if round_ % 2 == 0:
                send_rates.append(send(f"send{round_}"))
                loop_rates.append(loop(f"loop{round_}"))
            else:
                loop_rates.append(loop(f"loop{round_}"))
                send_rates.append(send(f"send{round_}"))
            print(f"round {round_ + 1}: send {send_rates[-1]:,.0f} lines/s, plain ingest loop "
                  f"{loop_rates[-1]:,.0f} lines/s, ratio {send_rates[-1] / loop_rates[-1]:.2f}", flush=True)
        send_rate, loop_rate = statistics.median(send_rates), statistics.median(loop_rates)
        against = "bench/sink.py (--sink null: stores nothing)" if null else "`openmonetize serve`"
        print(f"{lines:,} lines, {args.rounds} rounds, median; each run a fresh process, against a fresh {against}")
        print(f"openmonetize send          : {send_rate:>9,.0f} lines/s")
        print(f"plain EventsApi.ingest loop: {loop_rate:>9,.0f} lines/s")
        print(f"ratio send / loop          : {send_rate / loop_rate:.2f}   (goal >= 0.9)")
        per_line_costs(source)
        fixed_costs(work, env, null)
        import_costs(env)
        if null:
            return

        id_order(work, source, env, args.rounds)

        with Server(work, "rss-small", env) as url:
            small_rss, _ = peak_rss_mb(source, url, env)
        big = work / "big.jsonl"
        write_events(big, args.rss_lines)
        with Server(work, "rss-big", env) as url:
            big_rss, big_seconds = peak_rss_mb(big, url, env)
        size_mb = big.stat().st_size / 1e6
        print(f"peak RSS of send: {small_rss:.0f} MB for {lines:,} lines; {big_rss:.0f} MB for "
              f"{args.rss_lines:,} lines ({size_mb:.0f} MB file, {args.rss_lines / big_seconds:,.0f} lines/s); "
              f"ratio {big_rss / small_rss:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
