"""The `openmonetize` command line, driven as installed (the venv's console script) in subprocesses,
against `openmonetize serve` running as a subprocess too. No mocks, no timing thresholds."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from openmonetize.cli.jsonl import (
    MAX_LINE_BYTES,
    Invalid,
    derive_event_id,
    event_time_ms,
    id_namespace,
    parse_line,
    read_lines,
)
from openmonetize.cli.progress import Counts
from openmonetize.lib.buffers import inspect_spool, read_spool
from openmonetize.testing.store import SqliteStore, read_totals

OM = str(Path(sys.executable).with_name("openmonetize"))  # the console script pip installed beside python
KEY = "sk_cli_test_0123456789abcdef"
TS = "2026-11-01T10:00:00Z"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENMONETIZE_")}
    # the tables' width is the CLI's default (140 columns when not a terminal), whatever COLUMNS the test run has
    base.pop("COLUMNS", None)
    return {**base, "OPENMONETIZE_API_KEY": KEY, **extra}


def run(*args: str, stdin: bytes | None = None, environ: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the console script; the API key must never appear in what it prints."""
    result = subprocess.run([OM, *args], input=stdin.decode() if stdin is not None else None, capture_output=True,
                            text=True, env=environ if environ is not None else env(), timeout=timeout)
    assert KEY not in result.stdout + result.stderr
    return result


def summary(text: str) -> dict[str, int]:
    return {name: int(value.replace(",", ""))
            for name, value in re.findall(r"^  (\w+)\s+([\d,]+)", text, flags=re.M)}


def db_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # the table is created with the server's first connection
        return 0
    finally:
        conn.close()


def db_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT event_id FROM events")]
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    db: Path
    banner: str
    proc: subprocess.Popen[str]


def start_serve(db: Path, *args: str, environ: dict[str, str] | None = None) -> Served:
    proc = subprocess.Popen([OM, "serve", "--db", str(db), "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ if environ is not None else env())
    assert proc.stdout is not None
    banner = ""
    for line in proc.stdout:  # ends if the server fails to start
        banner += line
        if line.startswith("Ctrl-C to stop"):
            break
    match = re.search(r"listening on (http://\S+)", banner)
    assert match, banner + (proc.stderr.read() if proc.stderr else "")
    return Served(match.group(1), db, banner, proc)


def stop_serve(served: Served, sig: int = signal.SIGTERM) -> str:
    served.proc.send_signal(sig)
    out, err = served.proc.communicate(timeout=30)
    assert served.proc.returncode == 0, err
    assert "stopped after" in out
    return served.banner + out + err


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Served]:
    served = start_serve(tmp_path / "usage.db")
    yield served
    assert KEY not in stop_serve(served)


def token(i: int, customer: str, **extra: object) -> dict[str, object]:
    return {"event_type": "TOKEN_USAGE", "customer_id": customer, "feature_id": "chat", "provider": "openai",
            "model": "gpt-4o", "input_tokens": 100 + i % 50, "output_tokens": 10 + i % 7, "timestamp": TS, **extra}


def image(i: int, customer: str, **extra: object) -> dict[str, object]:
    return {"event_type": "IMAGE_GENERATION", "customer_id": customer, "feature_id": "images", "provider": "openai",
            "model": "gpt-image-1", "image_count": 1 + i % 3, "timestamp": TS, **extra}


def custom(i: int, customer: str, **extra: object) -> dict[str, object]:
    return {"event_type": "CUSTOM", "customer_id": customer, "feature_id": "pdf", "unit_type": "pages",
            "quantity": 1 + i % 4, "timestamp": "2026-11-01T12:00:00+02:00", **extra}


BAD_LINES = [
    ('{"event_type":"TOKEN_USAGE","customer_id":"c","feature_id":"f","provider":"p","model":"m",'
     '"input_tokens":-5,"output_tokens":1,"timestamp":"2026-11-01T10:00:00Z"}', "input_tokens=-5"),
    ('{"event_type":"TOKEN_USAGE","customer_id":"c","feature_id":"f","provider":"p","model":"m",'
     '"input_tokens":5,"output_tokens":1,"reasoning_tokens":9,"timestamp":"2026-11-01T10:00:00Z"}',
     "reasoning_tokens=9 exceeds output_tokens=1"),
    ('{"event_type":"VIDEO","customer_id":"c"}', "event_type='VIDEO'"),
    ('{"event_type":"CUSTOM","customer_id":"c","feature_id":"f","unit_type":"pages","quantity":"3",'
     '"timestamp":"2026-11-01T10:00:00Z"}', "quantity='3'"),
    ('{"event_type":"CUSTOM","customer_id":"c","feature_id":"f","unit_type":"pages","quantity":3}',
     "timestamp is missing"),
    ('{"event_type": "IMAGE_GENERATION", "customer_id": "c"', "not valid JSON"),
    ('{"event_type":"IMAGE_GENERATION","feature_id":"f","provider":"p","model":"m","image_count":1,'
     '"timestamp":"2026-11-01T10:00:00Z"}', "customer_id is missing"),
]


def backfill_file(path: Path, lines: int) -> tuple[list[int], dict[int, dict[str, object]]]:
    """`lines` lines, 1% invalid (line numbers ending in 37), every 10th valid line with its own event_id,
    and pairs of identical lines (x123 and x124 of each thousand): two records, two charges."""
    bad: list[int] = []
    valid: dict[int, dict[str, object]] = {}
    out = io.StringIO()
    for i in range(1, lines + 1):
        if i % 100 == 37:
            bad.append(i)
            out.write(BAD_LINES[i // 100 % len(BAD_LINES)][0] + "\n")
            continue
        if i % 1000 == 124:  # an exact copy of the line before
            valid[i] = dict(valid[i - 1])
            out.write(json.dumps(valid[i - 1]) + "\n")
            continue
        make = (token, image, custom)[i % 3]
        extra: dict[str, object] = {} if i % 1000 == 123 else {"metadata": {"n": i}}
        if i % 10 == 0:
            extra["event_id"] = f"evt-{i}"
        event = make(i, f"cust_{i % 5}", **extra)
        valid[i] = event
        out.write(json.dumps(event) + "\n")
    path.write_text(out.getvalue())
    return bad, valid


def expected_id(line: int, event: dict[str, object]) -> str:
    explicit = event.get("event_id")
    return str(explicit) if explicit else derive_event_id(id_namespace(), line, event)


# -- send: the backfill, interrupted and resumed -------------------------------------------------------------


def test_send_100k_lines_interrupted_then_rerun_delivers_every_valid_line_exactly_once(serve: Served, tmp_path):
    source = tmp_path / "events.jsonl"
    bad, valid = backfill_file(source, 100_000)
    assert len(bad) == 1000 and len(valid) == 99_000
    raw_lines = source.read_bytes().splitlines(keepends=True)

    # 1. from stdin, interrupted (SIGINT) while its input is still open: it cannot have finished
    first = subprocess.Popen([OM, "send", "-", "--base-url", serve.url, "--rejects", str(tmp_path / "first.jsonl")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    assert first.stdin is not None and first.stdout is not None and first.stderr is not None
    first.stdin.write(b"".join(raw_lines[:60_000]))
    first.stdin.flush()
    while db_count(serve.db) < 20_000:
        assert first.poll() is None
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 130
    out, err = first.stdout.read().decode(), first.stderr.read().decode()
    first.stdin.close()
    assert KEY not in out + err
    assert "interrupted after line" in err and "run the same command again" in err
    arrived = db_count(serve.db)
    assert 20_000 <= arrived <= 59_400  # at most the valid lines among those written to it
    assert summary(out)["sent"] <= arrived

    # 2. the same lines, from the file this time: ids do not depend on where the lines come from
    second = run("send", str(source), "--base-url", serve.url)
    assert second.returncode == 1, second.stderr  # 1: there were invalid lines
    counts = summary(second.stdout)
    assert counts["read"] == 100_000 and counts["invalid"] == 1000 and counts["failed"] == 0
    assert counts["duplicates"] == arrived and counts["sent"] == 99_000 - arrived

    ids = db_ids(serve.db)
    assert len(ids) == 99_000
    assert set(ids) == {expected_id(line, event) for line, event in valid.items()}
    assert expected_id(1123, valid[1123]) != expected_id(1124, valid[1124])  # identical lines, two events

    # every bad line, and only those, in the rejects file beside the input, with number, reason and text
    rejects = [json.loads(line) for line in (tmp_path / "events.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == bad
    for record in rejects:
        line = record["line"]
        assert record["original"] == raw_lines[line - 1].decode().rstrip("\n")
        assert BAD_LINES[line // 100 % len(BAD_LINES)][1] in record["reason"]
    assert "line 37: " in second.stderr and "more invalid lines than shown" in second.stderr

    # 3. the totals read back by `usage` are those of the valid lines
    totals = json.loads(run("usage", "--db", str(serve.db), "--json").stdout)
    by_customer: dict[str, list[float]] = {}
    for event in valid.values():
        row = by_customer.setdefault(str(event["customer_id"]), [0, 0, 0, 0])
        row[0] += 1
        row[1] += int(event.get("input_tokens", 0))  # type: ignore[call-overload]
        row[2] += int(event.get("image_count", 0))  # type: ignore[call-overload]
        row[3] += float(event.get("quantity", 0))  # type: ignore[arg-type]
    got: dict[str, list[float]] = {}
    for row in totals:
        acc = got.setdefault(row["key"], [0, 0, 0, 0])
        acc[0] += row["events"]
        acc[1] += row["input_tokens"]
        acc[2] += row["image_count"]
        acc[3] += row["quantity"]
    assert got == by_customer


def test_send_validates_before_sending_and_names_field_value_and_rule(serve: Served, tmp_path):
    lines = [
        json.dumps(token(1, "cust_a", event_id="mine-1")),
        "",
        BAD_LINES[0][0],
        json.dumps(custom(2, "cust_a")),
        BAD_LINES[1][0],
        json.dumps(token(3, "cust_a", cached_tokens=5)),  # a typo must not be dropped silently
        "   ",
        json.dumps([token(4, "cust_a")]),
    ]
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join(lines) + "\n")

    dry = run("send", str(source), "--dry-run", environ=env(OPENMONETIZE_API_KEY=""))  # no key needed
    assert dry.returncode == 1
    assert summary(dry.stdout) == {"read": 6, "valid": 2, "invalid": 4}
    assert db_count(serve.db) == 0
    assert "line 3: input_tokens=-5: Input should be greater than or equal to 0" in dry.stderr
    assert "line 5: reasoning_tokens=9 exceeds output_tokens=1" in dry.stderr
    assert "line 6: unknown field cached_tokens: not part of TOKEN_USAGE events" in dry.stderr
    assert "line 8: a line must hold one JSON object (an event), not an array" in dry.stderr

    sent = run("send", str(source), "--base-url", serve.url, "--rejects", str(tmp_path / "bad.jsonl"))
    assert sent.returncode == 1
    assert summary(sent.stdout) == {"read": 6, "sent": 2, "duplicates": 0, "invalid": 4, "failed": 0}
    assert [json.loads(r)["line"] for r in (tmp_path / "bad.jsonl").read_text().splitlines()] == [3, 5, 6, 8]
    assert set(db_ids(serve.db)) == {"mine-1", derive_event_id(id_namespace(), 4, custom(2, "cust_a"))}

    # all valid, from stdin: exit 0, rejects file not created
    clean = "\n".join(json.dumps(image(i, "cust_b")) for i in range(5)) + "\n"
    ok = run("send", "-", "--base-url", serve.url, stdin=clean.encode())
    assert ok.returncode == 0, ok.stderr
    assert summary(ok.stdout)["sent"] == 5
    assert not Path("stdin.rejects.jsonl").exists()
    # another scope for the ids: the same lines are new events
    again = run("send", "-", "--base-url", serve.url, "--id-namespace", "other-source", stdin=clean.encode())
    assert summary(again.stdout)["sent"] == 5 and db_count(serve.db) == 12


def test_send_stops_with_exit_1_when_the_key_is_refused_or_the_service_stays_down(serve: Served, tmp_path):
    source = tmp_path / "few.jsonl"
    source.write_text("".join(json.dumps(custom(i, "cust_c")) + "\n" for i in range(3000)))
    refused = run("send", str(source), "--base-url", serve.url, environ=env(OPENMONETIZE_API_KEY="not-the-key"))
    assert refused.returncode == 1
    assert "refused the API key (401)" in refused.stderr and "not-the-key" not in refused.stdout + refused.stderr
    assert db_count(serve.db) == 0

    down = run("send", str(source), "--base-url", f"http://127.0.0.1:{free_port()}", "--timeout", "1")
    assert down.returncode == 1
    assert "confirmed nothing for 1 s" in down.stderr
    counts = summary(down.stdout)
    assert counts["sent"] == 0 and counts["failed"] == counts["read"] - counts["invalid"] > 0


def test_send_usage_errors_exit_2(serve: Served, tmp_path):
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps(custom(1, "c")) + "\n")
    for args, environ, message in [
        (["send", str(source), "--base-url", serve.url], env(OPENMONETIZE_API_KEY=""), "no API key"),
        (["send", str(source), "--base-url", "ftp://example.com"], None, "not an http:// or https:// URL"),
        (["send", str(tmp_path / "missing.jsonl")], None, "does not exist"),
        (["send", str(source), "--rejects", str(source)], None, "cannot be the input file"),
        (["send", str(source), "--timeout", "0"], None, "--timeout"),
        (["send"], None, "Missing argument"),
        (["send", str(source), "--frobnicate"], None, "No such option"),
    ]:
        result = run(*args, environ=environ)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert db_count(serve.db) == 0


# -- serve, usage, demo ------------------------------------------------------------------------------------


def test_serve_prints_its_url_and_a_generated_or_given_key_but_masks_one_from_the_environment(tmp_path):
    generated = start_serve(tmp_path / "a.db", environ=env(OPENMONETIZE_API_KEY=""))
    dev_key = re.search(r"API key:\s+(om_dev_\S+) \(generated\)", generated.banner)
    assert dev_key, generated.banner
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps(custom(1, "c")) + "\n")
    result = run("send", str(source), "--base-url", generated.url, environ=env(OPENMONETIZE_API_KEY=dev_key.group(1)))
    assert result.returncode == 0 and db_count(generated.db) == 1
    stop_serve(generated, signal.SIGINT)  # Ctrl-C: a clean stop, exit 0

    given = start_serve(tmp_path / "b.db", "--api-key", "dev-key-given")
    assert "API key:  dev-key-given (from --api-key)" in given.banner
    stop_serve(given)

    from_env = start_serve(tmp_path / "c.db")
    assert f"********{KEY[-4:]} (from OPENMONETIZE_API_KEY)" in from_env.banner
    assert KEY not in stop_serve(from_env)


def try_line(banner: str) -> str:
    match = re.search(r"^  try:\s+(.+)$", banner, flags=re.M)
    assert match, banner
    return match.group(1)


def run_as_typed(command: str, cwd: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A shell line as a user pastes it, with the `openmonetize` of this venv first on PATH."""
    path = f"{Path(OM).parent}{os.pathsep}{environ.get('PATH', '')}"
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          env={**environ, "PATH": path}, timeout=120)


@pytest.mark.parametrize("key_args", [(), ("--api-key", "dev key; with $pace")], ids=["generated", "given"])
def test_serve_try_line_runs_as_printed_with_the_key_it_needs(tmp_path, key_args):
    (tmp_path / "events.jsonl").write_text(json.dumps(custom(1, "c")) + "\n")
    served = start_serve(tmp_path / "u.db", *key_args, environ=env(OPENMONETIZE_API_KEY=""))
    try:
        command = try_line(served.banner)
        assert "OPENMONETIZE_API_KEY=" in command and "openmonetize send events.jsonl" in command
        no_key = {k: v for k, v in env().items() if k != "OPENMONETIZE_API_KEY"}  # nothing but the line's own
        result = run_as_typed(command, tmp_path, no_key)
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary(result.stdout)["sent"] == 1 and db_count(served.db) == 1
    finally:
        stop_serve(served)


def test_serve_try_line_never_prints_a_key_from_the_environment(tmp_path):
    (tmp_path / "events.jsonl").write_text(json.dumps(custom(1, "c")) + "\n")
    served = start_serve(tmp_path / "u.db")  # OPENMONETIZE_API_KEY=KEY, the user's own
    try:
        command = try_line(served.banner)
        assert KEY not in command and "OPENMONETIZE_API_KEY" not in command
        result = run_as_typed(command, tmp_path, env())  # send reads the key from the environment, as serve did
        assert result.returncode == 0, result.stdout + result.stderr
        assert db_count(served.db) == 1
    finally:
        assert KEY not in stop_serve(served)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = run("serve", "--db", str(tmp_path / "d.db"), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 1 and "already in use" in busy.stderr


def test_read_totals_groups_and_filters_by_instant(tmp_path):
    db = tmp_path / "usage.db"
    store = SqliteStore(db)
    store.open()
    store.add([
        {**token(0, "cust_a"), "event_id": "1", "input_tokens": 100, "timestamp": "2026-11-01T09:59:59.999Z"},
        {**token(0, "cust_a"), "event_id": "2", "input_tokens": 10, "timestamp": "2026-11-01T12:00:00+02:00"},
        {**image(0, "cust_b"), "event_id": "3", "image_count": 2, "timestamp": "2026-11-01T10:00:00Z"},
        {**custom(0, "cust_b"), "event_id": "4", "quantity": 2.5, "timestamp": "2026-11-01t11:00:00z"},
        {**custom(0, "cust_b"), "event_id": "5", "unit_type": "seconds", "quantity": 7, "timestamp": TS},
    ], "batch")
    store.close()
    assert [(r["key"], r["unit_type"], r["events"], r["input_tokens"], r["quantity"]) for r in read_totals(db)] == [
        ("cust_a", None, 2, 110, 0.0), ("cust_b", None, 1, 0, 0.0), ("cust_b", "pages", 1, 0, 2.5),
        ("cust_b", "seconds", 1, 0, 7.0)]
    since = datetime(2026, 11, 1, 10, tzinfo=timezone.utc)  # 12:00+02:00 is 10:00Z: included; 09:59:59.999Z not
    by_model = read_totals(db, "model", since)
    assert [(r["key"], r["unit_type"], r["events"], r["input_tokens"], r["image_count"]) for r in by_model] == [
        ("gpt-4o", None, 1, 10, 0), ("gpt-image-1", None, 1, 0, 2), (None, "pages", 1, 0, 0),
        (None, "seconds", 1, 0, 0)]

    table = run("usage", "--db", str(db), "--by", "model", "--since", "2026-11-01T12:00:00+02:00")
    assert table.returncode == 0
    assert "Usage by model since 2026-11-01T12:00:00+02:00: 4 events" in table.stdout
    assert re.search(r"gpt-4o\s+│\s+1\s+│\s+10\s+│", table.stdout)
    assert "2.5 pages, 7 seconds" in table.stdout and "(custom units: no model)" in table.stdout
    feature = run("usage", "--db", str(db), "--by", "feature", "--json")
    assert [(r["key"], r["events"]) for r in json.loads(feature.stdout)] == [
        ("chat", 2), ("images", 1), ("pdf", 1), ("pdf", 1)]


def final_progress_line(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.startswith("sending: ")][-1:]
    return line


def test_send_progress_counts_new_and_duplicates_and_a_rerun_says_0_new(serve: Served, tmp_path):
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(custom(i, "c", metadata={"n": i})) + "\n" for i in range(2500)))
    first = run("send", str(source), "--base-url", serve.url)
    assert first.returncode == 0, first.stderr
    assert final_progress_line(first.stderr).startswith("sending: 2,500 new, 0 duplicates")
    assert "100% of the input acknowledged" in first.stderr
    again = run("send", str(source), "--base-url", serve.url)
    assert again.returncode == 0, again.stderr
    line = final_progress_line(again.stderr)
    assert line.startswith("sending: 0 new, 2,500 duplicates") and "100% of the input acknowledged" in line
    assert "2,500 delivered" not in again.stderr
    assert (summary(again.stdout)["sent"], summary(again.stdout)["duplicates"]) == (0, 2500)
    dry = run("send", str(source), "--dry-run")
    assert "reading: 2,500 lines checked" in dry.stderr and " new, " not in dry.stderr


class Recorder:
    """A progress reporter that keeps every snapshot it is shown (the command's own bar draws the same counts)."""

    def __init__(self, on_update: Callable[[Counts], None]) -> None:
        self.snapshots: list[Counts] = []
        self.on_update = on_update

    def update(self, counts: Counts) -> None:
        self.snapshots.append(dataclasses.replace(counts))
        self.on_update(counts)

    def close(self, counts: Counts) -> None:
        self.snapshots.append(dataclasses.replace(counts))


def test_send_progress_is_what_the_service_acknowledged_not_what_was_read(tmp_path, monkeypatch, capsys):
    # In process: the server refuses every request (503) until the reader, a window of events ahead, has to
    # wait for room; only then is it let through. The progress shown must stay at 0 until then.
    from openmonetize.cli import backfill
    from openmonetize.cli.common import stderr_console
    from openmonetize.testing import LocalIngestServer

    lines = 15_000
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(custom(i, "c", metadata={"n": f"{i:06d}"})) + "\n" for i in range(lines)))
    width = len(source.read_bytes()) // lines  # every line has the same length
    with LocalIngestServer(api_key=KEY) as server:
        server.fail_next(10**6, 503, retry_after=0.01)

        def release_when_held(counts: Counts) -> None:
            if counts.lines >= backfill.WINDOW - backfill.CHUNK and server.faults_injected and not server.events:
                server.reset()  # drops the pending 503s: delivery goes through from now on

        recorder = Recorder(release_when_held)
        monkeypatch.setattr(backfill, "reporter", lambda *args, **kwargs: recorder)
        code = backfill.run(str(source), server.url, KEY, tmp_path / "rejects.jsonl", "", 60.0, stderr_console())
        assert code == 0 and len(server.events) == lines
    held = [c for c in recorder.snapshots if c.lines >= backfill.WINDOW - backfill.CHUNK and c.delivered == 0]
    assert held and all(c.acknowledged_bytes == 0 < c.bytes_read for c in held)
    for counts in recorder.snapshots:  # never ahead of what the service answered for
        assert counts.acknowledged_bytes <= width * (counts.delivered + counts.failed) <= counts.bytes_read
    assert recorder.snapshots[-1].acknowledged_bytes == source.stat().st_size
    assert (recorder.snapshots[-1].new, recorder.snapshots[-1].duplicates) == (lines, 0)


def test_send_bar_and_plain_line_show_the_acknowledged_share():
    from rich.console import Console

    from openmonetize.cli.progress import LiveBar, PlainLines

    counts = Counts(lines=9_000, bytes_read=900_000, acknowledged_bytes=300_000, new=1_000, duplicates=2_000)
    out = io.StringIO()
    bar = LiveBar(Console(file=out, force_terminal=True, width=80), 1_200_000, "sending", sending=True)
    bar.close(counts)
    drawn = out.getvalue()
    assert " 25%" in drawn and "1,000 new, 2,000 duplicates" in drawn and "9,000" not in drawn
    plain = PlainLines(Console(file=io.StringIO()), 1_200_000, "sending", sending=True).line(counts)
    assert plain.startswith("sending: 1,000 new, 2,000 duplicates (")
    assert "25% of the input acknowledged" in plain and "9,000 lines read" in plain


def test_demo_runs_the_readme_tour_its_counts_add_up_and_it_fits_100_columns():
    result = run("demo", environ=env(COLUMNS="100", LINES="40"))
    assert result.returncode == 0, result.stderr
    assert "local ingest server listening on http://127.0.0.1:" in result.stdout
    assert "3000/3000 arrived once each (flush ok: True)" in result.stdout
    counts = re.search(r"(\d+) requests: (\d+) failed on purpose \(faults injected\), (\d+) retried", result.stdout)
    assert counts, result.stdout
    requests, faults, retries = map(int, counts.groups())
    assert faults == retries > 0 and requests >= 30 + retries  # 3000 events in batches of at most 100
    too_wide = [line for line in (result.stdout + result.stderr).splitlines() if len(line) > 100]
    assert not too_wide, too_wide


# -- spool --------------------------------------------------------------------------------------------------


SPOOLER = """
import json, os, signal, sys, time
from openmonetize import OpenMonetize
om = OpenMonetize(api_key={key!r}, base_url={url!r}, spool_dir={spool!r})
om._settings.adopt_interval = 3600  # this test decides which files are orphans, not the 30 s re-adoption
ids = [om.track_custom_event(customer_id={customer!r}, feature_id="f", unit_type="pages", quantity=1,
                             timestamp=f"2026-11-0{{1 + i % 3}}T08:00:00Z") for i in range({count})]
time.sleep(0.3)  # past the spool's commit interval: everything is on disk
print(json.dumps(ids), flush=True)
if {die}:
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # alive (holding its spool file's lock) until the test closes stdin
os.kill(os.getpid(), signal.SIGKILL)
"""


def spooler(spool: Path, customer: str, count: int, die: bool) -> tuple[subprocess.Popen[str], set[str]]:
    down = f"http://127.0.0.1:{free_port()}"
    code = SPOOLER.format(key=KEY, url=down, spool=str(spool), customer=customer, count=count, die=die)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, set(json.loads(proc.stdout.readline()))


def test_spool_status_export_and_replay(serve: Served, tmp_path):
    spool = tmp_path / "spool"
    live, live_ids = spooler(spool, "cust_live", 700, die=False)  # first: it would adopt an orphan at start
    dead, dead_ids = spooler(spool, "cust_dead", 1500, die=True)
    assert dead.wait(timeout=30) == -signal.SIGKILL
    try:
        status = json.loads(run("spool", "status", str(spool), "--json").stdout)
        assert sorted((f["live"], f["events"]) for f in status) == [(False, 1500), (True, 700)]
        orphan = next(f for f in status if not f["live"])
        assert (orphan["oldest"], orphan["newest"]) == ("2026-11-01T08:00:00.000Z", "2026-11-03T08:00:00.000Z")
        assert orphan["bytes"] > 0
        table = run("spool", "status", str(spool)).stdout
        assert "orphaned" in table and "live" in table and "2 files" in table

        everything = run("spool", "export", str(spool))
        assert {json.loads(line)["event_id"] for line in everything.stdout.splitlines()} == dead_ids | live_ids
        out = tmp_path / "orphans.jsonl"
        assert run("spool", "export", str(spool), "--orphans-only", "--out", str(out)).returncode == 0
        assert {json.loads(line)["event_id"] for line in out.read_text().splitlines()} == dead_ids

        # the service is down: nothing delivered, nothing lost, exit 1
        down = run("spool", "replay", str(spool), "--base-url", f"http://127.0.0.1:{free_port()}", "--timeout", "1")
        assert down.returncode == 1
        assert summary(down.stdout) == {"adopted": 1500, "sent": 0, "duplicates": 0, "refused": 0, "left": 1500,
                                        "live": 700}
        assert sorted((f.live, f.events) for f in inspect_spool(spool)) == [(False, 1500), (True, 700)]

        up = run("spool", "replay", str(spool), "--base-url", serve.url)
        assert up.returncode == 0, up.stderr
        assert summary(up.stdout) == {"adopted": 1500, "sent": 1500, "duplicates": 0, "refused": 0, "left": 0,
                                      "live": 700}
        assert set(db_ids(serve.db)) == dead_ids
        assert [(f.live, f.events) for f in inspect_spool(spool)] == [(True, 700)]  # the live file untouched
        assert len(list(read_spool(spool))) == 700

        # the export is valid input for send, ids kept: all duplicates now
        resent = run("send", str(out), "--base-url", serve.url)
        assert resent.returncode == 0 and summary(resent.stdout)["duplicates"] == 1500

        nothing = run("spool", "replay", str(spool), "--base-url", serve.url)
        assert nothing.returncode == 0 and summary(nothing.stdout)["adopted"] == 0
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(timeout=30)
    assert "no spool files" in run("spool", "status", str(tmp_path)).stdout


DEAD_LETTERER = """
import json, sys
from openmonetize.lib.buffers import SpoolBuffer
from openmonetize.lib.failures import DeliveryFailure
buffer = SpoolBuffer({spool!r})
buffer.open()
buffer.intake.extend(enumerate((json.dumps(e).encode() for e in {events!r}), 1))
buffer.commit()
batch = buffer.take(1000, 1 << 30)
assert buffer.dead_letter(batch, DeliveryFailure("rejected", batch.events(), "400 VALIDATION_ERROR: no such feature",
                                                 status=400))
print("ready", flush=True)
if {live}:
    sys.stdin.read()  # alive (holding its spool file's lock) until the test closes stdin
buffer.close()
"""


def dead_letterer(spool: Path, customer: str, count: int, live: bool) -> subprocess.Popen[str]:
    """A process whose spool holds `count` dead letters: alive until stdin closes, or gone at once."""
    events = [token(i, customer, event_id=f"{customer}-{i}") for i in range(count)]
    code = DEAD_LETTERER.format(spool=str(spool), events=events, live=live)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_spool_dead_letters_list_export_resend_and_replay(serve: Served, tmp_path):
    spool = tmp_path / "spool"
    live = dead_letterer(spool, "cust_live", 2, live=True)  # first: the other adopts nothing of a live file
    dead = dead_letterer(spool, "cust_dead", 3, live=False)
    assert dead.wait(timeout=30) == 0
    try:
        status = json.loads(run("spool", "status", str(spool), "--json").stdout)
        assert sorted((f["state"], f["events"], f["dead_letters"]) for f in status) == [("live", 0, 2),
                                                                                         ("orphaned", 0, 3)]
        listed = json.loads(run("spool", "dead-letters", str(spool), "--json").stdout)
        assert sorted((d["event_id"], d["customer_id"], d["live"]) for d in listed) == [
            ("cust_dead-0", "cust_dead", False), ("cust_dead-1", "cust_dead", False),
            ("cust_dead-2", "cust_dead", False), ("cust_live-0", "cust_live", True), ("cust_live-1", "cust_live", True)]
        assert {(d["kind"], d["status"], d["reason"]) for d in listed} == {
            ("rejected", 400, "400 VALIDATION_ERROR: no such feature")}
        assert all(d["when"].endswith("Z") for d in listed)
        table = run("spool", "dead-letters", str(spool)).stdout
        assert "event id" in table and "cust_dead-2" in table and "(live)" in table

        # exported as sent, they are input for send (here the service takes them: the data was fixed)
        out = tmp_path / "dead.jsonl"
        exported = run("spool", "dead-letters", str(spool), "--export", str(out), "--event-id", "cust_dead-0",
                       "--event-id", "cust_dead-1")
        assert exported.returncode == 0 and "exported 2 dead letters" in exported.stderr
        assert [json.loads(line)["event_id"] for line in out.read_text().splitlines()] == ["cust_dead-0",
                                                                                            "cust_dead-1"]
        sent = run("send", str(out), "--base-url", serve.url)
        assert sent.returncode == 0 and summary(sent.stdout)["sent"] == 2

        one = run("spool", "resend", str(spool), "--event-id", "cust_dead-2")
        assert one.returncode == 0 and "moved 1 dead letters" in one.stdout
        unknown = run("spool", "resend", str(spool), "--event-id", "nope")
        assert unknown.returncode == 1 and "no dead letter with event id nope" in unknown.stderr
        rest = run("spool", "resend", str(spool))
        assert rest.returncode == 1  # the live process's dead letters are left alone, and it says so
        assert "moved 2 dead letters" in rest.stdout and "left alone: 2 dead letters in 1 file(s)" in rest.stdout
        assert sorted((f.state, f.events, f.dead_letters) for f in inspect_spool(spool)) == [("live", 0, 2),
                                                                                             ("orphaned", 3, 0)]

        replayed = run("spool", "replay", str(spool), "--base-url", serve.url)
        assert replayed.returncode == 0, replayed.stderr
        assert {k: summary(replayed.stdout)[k] for k in ("adopted", "sent", "duplicates", "left")} == {
            "adopted": 3, "sent": 1, "duplicates": 2, "left": 0}
        assert {"cust_dead-0", "cust_dead-1", "cust_dead-2"} <= set(db_ids(serve.db))

        # a corrupt file is shown as such, and what can be read still is
        (spool / "1-0badf11e.om-spool.sqlite3").write_bytes(b"not a database, not even close" * 100)
        shown = run("spool", "status", str(spool))
        assert shown.returncode == 0 and "corrupt" in shown.stdout and "file is not a database" in shown.stderr
        partial = run("spool", "dead-letters", str(spool), "--json")
        assert partial.returncode == 1 and "skipped 1-0badf11e.om-spool.sqlite3" in partial.stderr
        assert len(json.loads(partial.stdout)) == 2
        assert run("spool", "export", str(spool)).returncode == 1
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(timeout=30)


# -- help, bad flags, the extra ----------------------------------------------------------------------------


COMMANDS = [[], ["serve"], ["demo"], ["send"], ["usage"], ["spool"], ["spool", "status"], ["spool", "replay"],
            ["spool", "export"], ["spool", "dead-letters"], ["spool", "resend"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "openmonetize")
def test_help_on_every_command(command):
    result = run(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: openmonetize {' '.join(command)}".rstrip())


def test_bad_flags_exit_2(tmp_path):
    db = tmp_path / "usage.db"
    SqliteStore(db).open()
    for args in (["--nope"], ["frobnicate"], ["serve", "--port", "http"], ["serve", "--port", "70000"],
                 ["usage", "--db", str(db), "--by", "planet"], ["usage", "--db", str(db), "--since", "yesterday"],
                 ["usage", "--db", str(tmp_path / "missing.db")], ["spool"], ["spool", "status"],
                 ["spool", "status", str(tmp_path / "missing")], ["spool", "replay", str(tmp_path)],
                 ["spool", "frob", str(tmp_path)], ["spool", "dead-letters", str(tmp_path / "missing")],
                 ["spool", "resend"], ["spool", "dead-letters", str(tmp_path), "--nope"]):
        result = run(*args, environ=env(OPENMONETIZE_API_KEY=""))
        assert result.returncode == 2, (args, result.stdout, result.stderr)


def test_without_the_cli_extra_one_clear_line():
    code = "import sys; sys.modules['click'] = None; from openmonetize.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == ("openmonetize: the command line needs the cli extra (click is missing):"
                                     " pip install 'openmonetize[cli]'")


# -- the line format, in process ----------------------------------------------------------------------------


def test_derived_ids_are_a_stable_promise():
    event = {"event_type": "CUSTOM", "customer_id": "cust_abc", "feature_id": "pdf", "unit_type": "pages",
             "quantity": 3, "timestamp": TS}
    # Changing the rule would make files sent by earlier versions bill twice when re-sent.
    golden = "01a1968d-3900-8e77-972b-8bec4ca7af39"
    assert derive_event_id(id_namespace(), 7, event) == golden
    assert uuid.UUID(golden).version == 8 and int(golden.replace("-", "")[:12], 16) == 1793527200000
    assert event_time_ms("2026-11-01T10:00:00Z") == event_time_ms("2026-11-01T12:00:00+02:00") == 1793527200000
    assert event_time_ms("2026-11-01T10:00:00") == 1793527200000  # no offset: UTC here, whatever the machine
    assert event_time_ms("2026-11-01T10:00:00.25Z") == 1793527200250 and event_time_ms("yesterday") == 0
    later = derive_event_id(id_namespace(), 1, {**event, "timestamp": "2026-11-01T10:00:00.001Z"})
    assert later > golden  # ids sort in event-time order, as the SDK's UUIDv7s do
    reordered = b'{ "timestamp": "2026-11-01T10:00:00Z", "quantity": 3, "unit_type": "pages", ' \
                b'"feature_id": "pdf", "customer_id": "cust_abc", "event_type": "CUSTOM" }'
    parsed = parse_line(reordered, 7, id_namespace())
    assert not isinstance(parsed, Invalid) and parsed.event_id == golden
    assert derive_event_id(id_namespace(), 8, event) != derive_event_id(id_namespace(), 7, event)
    assert derive_event_id(id_namespace("x"), 7, event) != derive_event_id(id_namespace(), 7, event)
    with_null = parse_line(json.dumps({**event, "event_id": None}).encode(), 7, id_namespace())
    assert not isinstance(with_null, Invalid) and with_null.event_id == parsed.event_id


def test_read_lines_numbers_like_an_editor_and_bounds_memory():
    long = b'{"x": "' + b"a" * (MAX_LINE_BYTES + 10) + b'"}\n'
    stream = io.BytesIO(b'\xef\xbb\xbf{"a": 1}\n\n   \n' + long + b'{"b": 2}')
    got = [(number, raw[:10], position) for number, raw, position in read_lines(stream)]
    assert [g[0] for g in got] == [1, 4, 5]
    assert got[0][1] == b'{"a": 1}\n' and got[2][1] == b'{"b": 2}'
    assert got[2][2] == len(stream.getvalue())
    overlong = parse_line(b"x" * (MAX_LINE_BYTES + 1), 4, id_namespace())
    assert isinstance(overlong, Invalid) and "longer than" in overlong.reason
    assert isinstance(parse_line(b"\xff{}", 1, id_namespace()), Invalid)
    odd = parse_line(b'{"event_type": ["CUSTOM"]}', 1, id_namespace())
    assert isinstance(odd, Invalid) and odd.reason.startswith("event_type=['CUSTOM']: it must be one of")
    nan = parse_line(json.dumps(custom(1, "c")).replace('"quantity": 2', '"quantity": NaN').encode(), 1, id_namespace())
    assert isinstance(nan, Invalid) and "NaN is not a JSON number" in nan.reason


def test_events_the_service_refuses_go_to_the_rejects_file_with_their_line(tmp_path, capsys):
    # In process: only the library's server can be told to refuse a customer (as the real service does).
    from openmonetize.cli.backfill import run as run_send
    from openmonetize.cli.common import stderr_console
    from openmonetize.testing import LocalIngestServer

    source = tmp_path / "refused.jsonl"
    source.write_text("".join(json.dumps(custom(i, "cust_gone" if i == 3 else "cust_ok")) + "\n" for i in range(5)))
    rejects = tmp_path / "refused.rejects.jsonl"
    with LocalIngestServer(api_key=KEY) as server:
        server.reject_customers({"cust_gone"})
        code = run_send(str(source), server.url, KEY, rejects, "", 30.0, stderr_console())
        assert len(server.events) == 4
    assert code == 1
    counts = summary(capsys.readouterr().out)
    assert (counts["sent"], counts["invalid"], counts["failed"]) == (4, 0, 1)
    [record] = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert record["line"] == 4 and "refused by the service" in record["reason"]
    assert "CUSTOMER_NOT_FOUND" in record["reason"] and json.loads(record["original"])["customer_id"] == "cust_gone"
