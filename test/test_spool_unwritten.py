"""A paced spool hands events out as soon as they are tracked, before they are written (issue 14): a commit
writes those not yet resolved, in flight or not, so nothing the spool promises is lost, and an event
resolved before its commit is never written to `events`. What happens to an event while its write runs, if
that write fails, if it is refused, and when the process dies, is pinned here.

The buffer is driven as the delivery loop drives it (`pace`: commits run on the writer thread); a crash goes
through a real process and a real client against a LocalIngestServer. No sleeps: conditions are awaited
with a generous bound.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import wait_for
from test_spool import KEY, body, drain, opened
from test_spool_groups import ROOT, left_for_the_next_process, rows_in

from openmonetize import DeliveryFailure, OpenMonetize
from openmonetize.lib.buffers import SpoolBuffer, read_dead_letters, read_spool
from openmonetize.testing import LocalIngestServer


def paced(directory: Path, notices: list[DeliveryFailure] | None = None) -> SpoolBuffer:
    buffer = opened(directory, notices)
    buffer.pace(lambda: None)
    return buffer


def written(buffer: SpoolBuffer, *, young: bool = True) -> None:
    """A due commit (on the writer thread), and its result taken in (not `young`: a delivery loop's periodic
    commit, every half interval, of only what is older than the last one)."""
    buffer.commit(True, young=young)
    job = buffer._job
    assert job is None or wait_for(job.done.is_set, 60)
    buffer.commit(False)
    assert buffer._job is None


def test_events_are_handed_out_before_their_write_and_only_unresolved_ones_are_written(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 101))
    assert buffer.ready() == 100
    first = buffer.take(60, 1 << 30)  # nothing is on disk yet
    assert first is not None and first.bodies == [body(i) for i in range(1, 61)]
    assert buffer.low_seq() == 1 and len(buffer) == 40
    buffer.ack(first)
    assert buffer.low_seq() == 61
    written(buffer)
    assert buffer.stored == 40 and rows_in(buffer.path) >= 1
    assert left_for_the_next_process(buffer) == [body(i) for i in range(61, 101)]  # the acknowledged never written


def test_events_in_flight_at_their_commit_are_written_and_left_to_the_next_process_if_it_dies(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 201))
    batch = buffer.take(200, 1 << 30)
    assert batch is not None and len(buffer) == 0
    written(buffer)  # all 200 in flight: written all the same
    assert buffer.stored == 200 and len(buffer) == 0
    buffer.ack(batch.subset(range(50)))  # their batch's keys now name the disk
    buffer.give_back(batch.subset(range(150, 200)))
    again = buffer.take(500, 1 << 30)
    assert again is not None and again.bodies == [body(i) for i in range(151, 201)]
    buffer.give_back(again)
    assert buffer.low_seq() == 51
    written(buffer)
    assert buffer.stored == 150
    assert left_for_the_next_process(buffer) == [body(i) for i in range(51, 201)]


def test_events_resolved_while_their_write_runs_are_recorded_at_the_next_commit(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 101))
    buffer.commit(True)  # handed to the writer thread
    batch = buffer.take(100, 1 << 30)  # handed out while they are written
    assert batch is not None and batch.bodies == [body(i) for i in range(1, 101)]
    buffer.ack(batch.subset(range(70)))
    job = buffer._job
    assert job is not None and wait_for(job.done.is_set, 60)
    buffer.commit(False)  # the write is taken in: 30 still in flight, 70 resolved, not yet recorded
    assert buffer.stored == 30 and buffer.low_seq() == 71
    buffer.ack(batch.subset(range(70, 90)))  # (through the disk's keys now)
    written(buffer)
    assert buffer.stored == 10
    assert left_for_the_next_process(buffer) == [body(i) for i in range(91, 101)]


def test_an_event_refused_before_its_write_is_a_dead_letter_and_never_written(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 11))
    batch = buffer.take(10, 1 << 30)
    assert batch is not None
    refused = batch.subset([3])
    assert buffer.dead_letter(refused, DeliveryFailure("rejected", refused.events(), "400 nope", status=400))
    buffer.ack(batch.subset(i for i in range(10) if i != 3))
    written(buffer)
    assert buffer.stored == 0 and buffer.dead_letters == 1 and rows_in(buffer.path) == 0

    buffer.intake.extend((i, body(i)) for i in range(11, 21))
    buffer.commit(True)
    batch = buffer.take(10, 1 << 30)  # handed out while they are written
    assert batch is not None
    refused = batch.subset([0, 9])
    assert buffer.dead_letter(refused, DeliveryFailure("rejected", refused.events(), "400 nope", status=400))
    assert buffer.stored == 8  # the write was taken in, then the two moved to the dead letters
    buffer.give_back(batch.subset(range(1, 9)))
    buffer.close(delete_if_empty=False)
    letters = read_dead_letters(tmp_path / "spool")
    assert [letter.body for letter in letters] == [body(4), body(11), body(20)]
    assert list(read_spool(tmp_path / "spool")) == [body(i) for i in range(12, 20)]


def test_a_write_the_disk_refuses_holds_events_in_flight_and_hands_out_each_once(tmp_path):
    notices: list[DeliveryFailure] = []
    buffer = paced(tmp_path / "spool", notices)
    buffer.intake.extend((i, body(i)) for i in range(1, 21))
    first = buffer.take(10, 1 << 30)
    assert first is not None
    db = buffer._db
    assert db is not None
    db.execute("PRAGMA query_only = ON")  # every write now fails (SQLITE_READONLY), as on a failing disk
    written(buffer)
    assert [n.kind for n in notices] == ["spool_error"]
    assert buffer.held == 20 and len(buffer) == 10 and buffer.low_seq() == 1
    buffer.intake.extend((i, body(i)) for i in range(21, 26))  # in a fault, held at the next commit
    second = buffer.take(100, 1 << 30)
    assert second is not None and second.bodies == [body(i) for i in range(11, 21)]  # not the first ten again
    buffer.ack(first)
    buffer.give_back(second)
    db.execute("PRAGMA query_only = OFF")
    written(buffer)  # written back: the disk has room again
    assert buffer.held == 0 and buffer.stored == 15 and len(notices) == 1
    assert drain(buffer) == [body(i) for i in range(11, 26)]
    assert buffer.stored == 0 and buffer.low_seq() == float("inf")
    buffer.close()


KILLED_IN_FLIGHT = """
import json, os, signal, time
from openmonetize import OpenMonetize
om = OpenMonetize(api_key={key!r}, base_url={url!r}, spool_dir={spool!r}, request_timeout=60, batch_size=50,
                  spool_commit_interval=1.0)
for i in range(50):  # a full batch: handed out at once
    om.track_custom_event(customer_id="cust_1", feature_id="f", unit_type="u", quantity=1, event_id=f"ev-{{i:03d}}")
def wait(condition):
    deadline = time.monotonic() + 60
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
wait(lambda: om.stats()["requests"] >= 1)
before = om.stats()["spooled"]  # in flight, not yet written
wait(lambda: om.stats()["spooled"] >= 50)  # written at their commit, still in flight
print(json.dumps([before, om.stats()["spooled"]]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_events_in_flight_that_never_got_an_answer_survive_kill_9_with_their_ids(tmp_path):
    spool = tmp_path / "spool"
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        code = KILLED_IN_FLIGHT.format(key=KEY, url=url, spool=str(spool))
        child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        silent.close()
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert json.loads(child.stdout) == [0, 50]
    server = LocalIngestServer(api_key=KEY)
    server.start()
    try:
        with OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool) as om:
            assert om.flush(60)
        assert server.event_ids == {f"ev-{i:03d}" for i in range(50)}
    finally:
        server.stop()


def test_reading_a_group_back_while_a_write_is_done_takes_the_write_in_without_losing_the_batch(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer._queue.cache_bytes = 0  # every group is read back from the file (as past the memory cache)
    buffer.intake.extend((i, body(i)) for i in range(1, 101))
    written(buffer)
    buffer.intake.extend((i, body(i)) for i in range(101, 201))
    buffer.commit(True)
    job = buffer._job
    assert job is not None and wait_for(job.done.is_set, 60)
    first = buffer.take(1000, 1 << 30)  # reading a group back first takes the finished write in
    assert first is not None and first.bodies == [body(i) for i in range(1, 101)]
    buffer.ack(first)
    assert drain(buffer) == [body(i) for i in range(101, 201)]
    assert buffer.stored == 0
    buffer.close()
