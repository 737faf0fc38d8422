"""The spool's grouped rows (issue 14): events committed together share a row, yet are acknowledged, given
back, refused and dead-lettered one by one, durably; the file gives its space back while the client runs;
files of the previous version (one row per event) are still adopted, listed and dumped.

The buffer is driven directly where the bookkeeping is the point; the file's size and crashes go
through real processes, a real client and a LocalIngestServer on loopback. No sleeps: conditions are
awaited with a generous bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from conftest import wait_for
from test_spool import KEY, body, drain, ids_of, opened

from openmonetize import DeliveryFailure, OpenMonetize
from openmonetize.lib.buffers import (
    LEGACY_SUFFIX,
    SpoolBuffer,
    inspect_spool,
    read_dead_letters,
    read_spool,
    spool_files,
)
from openmonetize.lib.retry import RetryPolicy
from openmonetize.lib.spool_format import GROUP_BYTES
from openmonetize.testing import LocalIngestServer

ROOT = Path(__file__).resolve().parent.parent


def rows_in(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def left_for_the_next_process(buffer: SpoolBuffer) -> list[bytes]:
    """Close `buffer` as a process that dies would leave it (its file kept, its lock released), and return
    what a new process adopts from it, in order."""
    buffer.close(delete_if_empty=False)
    staging = Path(tempfile.mkdtemp(dir=buffer.directory.parent))
    try:
        nxt = opened(staging)
        shutil.move(str(buffer.path), staging / buffer.path.name)
        nxt.adopt_orphans()
        adopted = drain(nxt)
        nxt.close()
        return adopted
    finally:
        shutil.rmtree(staging)


def committed(tmp_path: Path, n: int) -> SpoolBuffer:
    buffer = opened(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, n + 1))
    buffer.commit()
    return buffer


# -- grouped rows -----------------------------------------------------------------------------------------


def test_a_commit_writes_a_few_rows_and_each_event_is_handed_out_once_in_order(tmp_path):
    buffer = committed(tmp_path, 1000)
    rows = rows_in(buffer.path)
    assert 1 < rows <= 1000 * len(body(1)) // GROUP_BYTES + 2  # groups, not one row per event
    assert buffer.stored == 1000 and len(buffer) == 1000
    out = []
    while (batch := buffer.take(77, 1 << 30)) is not None:  # batches that cut groups anywhere
        out += batch.bodies
        buffer.ack(batch)
    assert out == [body(i) for i in range(1, 1001)]
    assert rows_in(buffer.path) == 0 and buffer.stored == 0
    buffer.close()


def test_part_of_a_group_acknowledged_is_never_queued_again_after_the_process_dies(tmp_path):
    buffer = committed(tmp_path, 300)
    first = buffer.take(130, 1 << 30)  # the first group and part of the next
    second = buffer.take(40, 1 << 30)
    assert first is not None and second is not None
    buffer.ack(first)
    buffer.give_back(second)  # (a batch that will be retried)
    assert buffer.stored == 170 and buffer.low_seq() == 131
    assert left_for_the_next_process(buffer) == [body(i) for i in range(131, 301)]


def test_one_event_of_a_group_refused_and_dead_lettered_the_rest_acknowledged(tmp_path):
    buffer = committed(tmp_path, 50)
    batch = buffer.take(50, 1 << 30)
    assert batch is not None
    refused = batch.subset([17])
    failure = DeliveryFailure("rejected", refused.events(), "FEATURE_NOT_FOUND", status=202,
                              details=[{"index": 17, "event_id": "ev-000018", "code": "FEATURE_NOT_FOUND"}])
    assert buffer.dead_letter(refused, failure) is True
    assert buffer.low_seq() == 1  # the others are still in flight
    buffer.ack(batch.subset(i for i in range(50) if i != 17))
    assert buffer.dead_letters == 1 and buffer.stored == 0 and buffer.low_seq() == float("inf")
    assert rows_in(buffer.path) == 0  # the group is gone; its refused event lives on as a dead letter
    buffer.close()
    (letter,) = read_dead_letters(tmp_path / "spool")
    assert (letter.event_id, letter.status, letter.body) == ("ev-000018", 202, body(18))
    assert letter.details == [{"index": 17, "event_id": "ev-000018", "code": "FEATURE_NOT_FOUND"}]


def test_a_dead_letter_taken_from_a_group_whose_rest_waits_is_not_queued_again_by_the_next_process(tmp_path):
    buffer = committed(tmp_path, 40)
    batch = buffer.take(40, 1 << 30)
    assert batch is not None
    assert buffer.dead_letter(batch.subset([0, 39]), DeliveryFailure("rejected", [], "400 nope", status=400))
    buffer.give_back(batch.subset(range(1, 39)))
    assert buffer.low_seq() == 2 and len(buffer) == 38
    assert [e["event_id"] for e in map(json.loads, read_spool(tmp_path / "spool"))] == ids_of(
        [body(i) for i in range(2, 40)])  # the CLI's dump skips them too
    (state,) = inspect_spool(tmp_path / "spool")
    assert (state.events, state.dead_letters) == (38, 2)
    assert left_for_the_next_process(buffer) == [body(i) for i in range(2, 40)]


def test_give_back_after_partial_acks_hands_the_same_events_out_again_in_order(tmp_path):
    buffer = committed(tmp_path, 200)
    a, b, c = (buffer.take(60, 1 << 30) for _ in range(3))
    assert a is not None and b is not None and c is not None
    buffer.ack(b)
    buffer.give_back(c)
    buffer.give_back(a)
    again = drain(buffer)
    assert again == a.bodies + c.bodies + [body(i) for i in range(181, 201)]
    assert buffer.stored == 0
    buffer.close()


def test_a_batch_byte_bound_cuts_inside_a_group(tmp_path):
    buffer = committed(tmp_path, 100)
    size = len(body(1)) + 1
    batch = buffer.take(100, size * 7 + size // 2)
    assert batch is not None and len(batch) == 7
    rest = drain(buffer)
    assert batch.bodies + rest == [body(i) for i in range(1, 101)]
    buffer.close()


# -- the previous version's files ---------------------------------------------------------------------------

OLD_SCHEMA = [  # as the previous version created them (one row per event)
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL,"
    " body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_seq ON events (seq)",
    "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT,"
    " body BLOB NOT NULL, kind TEXT NOT NULL, status INTEGER, reason TEXT NOT NULL, details TEXT,"
    " dead_at TEXT NOT NULL)",
]


def old_version_file(directory: Path, bodies: list[bytes], dead: list[bytes]) -> Path:
    """A spool file exactly as the previous version left it when its process died (WAL not checkpointed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"4242-0ld0f11e{LEGACY_SUFFIX}"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in OLD_SCHEMA:
        db.execute(statement)
    db.execute("BEGIN")
    db.executemany("INSERT INTO events (seq, body) VALUES (?, ?)", list(enumerate(bodies, 1)))
    db.executemany("INSERT INTO dead_letters (event_id, body, kind, status, reason, details, dead_at)"
                   " VALUES (?, ?, 'rejected', 400, 'nope', NULL, '2026-11-01T08:00:00.000Z')",
                   [(json.loads(b)["event_id"], b) for b in dead])
    db.execute("COMMIT")
    Path(f"{path}.lock").touch()
    # a process that dies leaves its WAL behind: copy the files before SQLite checkpoints them at close
    copies = [Path(f"{path}{suffix}") for suffix in ("", "-wal")]
    saved = [p.read_bytes() for p in copies]
    db.close()
    for p, data in zip(copies, saved, strict=True):
        p.write_bytes(data)
    return path


def test_a_file_of_the_previous_version_is_adopted_in_order_with_its_dead_letters(tmp_path):
    spool = tmp_path / "spool"
    bodies = [body(i, "cust_old") for i in range(2500)]
    old = old_version_file(spool, bodies, dead=[body(9000, "cust_old")])
    (state,) = inspect_spool(spool)  # the CLI reads it as before
    assert (state.state, state.events, state.dead_letters) == ("orphaned", 2500, 1)
    assert state.oldest == state.newest == "2026-11-01T08:00:00.000Z"
    assert list(read_spool(spool)) == bodies

    buffer = opened(spool)
    assert buffer.adopt_orphans() == 2500
    assert not old.exists() and spool_files(spool) == [buffer.path]
    assert buffer.dead_letters == 1
    assert drain(buffer) == bodies
    buffer.close()


def test_a_client_delivers_what_the_previous_version_left_on_disk(tmp_path):
    spool = tmp_path / "spool"
    bodies = [body(i, "cust_old") for i in range(1200)]
    old_version_file(spool, bodies, dead=[])
    with LocalIngestServer(api_key=KEY) as server:
        om = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool)
        mine = om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=1)
        assert om.flush(60)
        assert server.event_ids == set(ids_of(bodies)) | {mine}
        assert om.shutdown(10)
    assert spool_files(spool) == []


# -- giving the disk back -----------------------------------------------------------------------------------


def spool_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if ".om-spool" in p.name and not p.name.endswith(".lock"))


def test_the_file_shrinks_once_a_backlog_is_delivered_while_the_client_runs(tmp_path):
    spool = tmp_path / "spool"
    server = LocalIngestServer(api_key=KEY).start()
    try:
        om = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool, retry_policy=RetryPolicy(cap=0.5))
        server.stop()  # the service is down: a backlog builds up on disk
        n = 60_000
        ids = {om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=i + 1)
               for i in range(n)}
        assert wait_for(lambda: om.stats()["spooled"] >= n, 120)
        grown = spool_size(spool)
        assert grown > 8 << 20
        server.start()
        assert om.flush(300)
        assert server.event_ids == ids
        # the client still runs: the space is given back by the delivery thread, not at close
        assert wait_for(lambda: spool_size(spool) < 6 << 20, 120), spool_size(spool)
        assert len(spool_files(spool)) == 1
        assert om.shutdown(10)
    finally:
        server.stop()


# -- crashes ----------------------------------------------------------------------------------------------

KILLED_MID_GROUP = """
import json, os, signal, sys
from openmonetize.lib.buffers import SpoolBuffer
buffer = SpoolBuffer({spool!r})
buffer.open()
bodies = {bodies!r}
buffer.intake.extend(enumerate((b.encode() for b in bodies), 1))
buffer.commit()  # committed: must survive
acked = buffer.take(130, 1 << 30)  # the first group and part of the second
buffer.ack(acked)
in_flight = buffer.take(70, 1 << 30)  # handed out, never answered
buffer.intake.extend((1000 + i, b.encode()) for i, b in enumerate({late!r}))  # tracked, never committed
print(json.dumps([len(acked), len(in_flight)]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_in_the_middle_of_a_group_keeps_every_committed_event_not_acknowledged(tmp_path):
    spool = tmp_path / "spool"
    bodies = [body(i).decode() for i in range(1, 501)]
    code = KILLED_MID_GROUP.format(spool=str(spool), bodies=bodies, late=[body(9999).decode()])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                           timeout=120, env=env)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert json.loads(child.stdout) == [130, 70]
    nxt = opened(spool)
    assert nxt.adopt_orphans() == 370
    assert drain(nxt) == [body(i) for i in range(131, 501)]  # in flight included, acknowledged ones not
    nxt.close()
    assert spool_files(spool) == []
