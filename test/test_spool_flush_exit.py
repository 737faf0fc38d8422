"""`om.flush(timeout)` then `os._exit()` loses nothing with a spool, however short the timeout.

delivery.md, "How the process ends": `os._exit()` is covered by a flush before it. With a spool, what the
flush waited for and that is not acknowledged when it returns must be on disk by then (its write
completed, not only handed to the writer thread), so the next process over the spool delivers it once.
The commit interval is 60 s here, so the regular cadence writes nothing in time: only the flush can.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from test_spool import make_orphan
from test_spool_unwritten import body, paced

from openmonetize import OpenMonetize
from openmonetize.lib.buffers import SpoolBuffer, read_spool
from openmonetize.lib.delivery import commit_due
from openmonetize.lib.spool_format import CHUNK
from openmonetize.testing import LocalIngestServer

KEY = "sk_spool_flush_exit_test_key"

CHILD = """
import json, os, socket
from openmonetize import OpenMonetize

silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
silent.bind(("127.0.0.1", 0))
silent.listen(64)
base_url = {{"silent": f"http://127.0.0.1:{{silent.getsockname()[1]}}", "down": {down!r}}}[{service!r}]
om = OpenMonetize(api_key={key!r}, base_url=base_url, spool_dir={spool!r}, spool_commit_interval=60,
                  flush_interval=0.01, request_timeout=60, batch_size=500)
ids = [om.track_custom_event(customer_id="c", feature_id="f", unit_type="calls", quantity=i + 1)
       for i in range({n})]
print(json.dumps({{"ids": ids, "flushed": om.flush({timeout!r})}}), flush=True)
os._exit(0)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("service", ["silent", "down"])
@pytest.mark.parametrize("timeout", [0, 0.01])
def test_flush_with_a_short_timeout_then_os_exit_leaves_every_event_for_the_next_process(tmp_path: Path,
                                                                                         service: str,
                                                                                         timeout: float) -> None:
    spool = tmp_path / "spool"
    code = CHILD.format(key=KEY, down=f"http://127.0.0.1:{free_port()}", service=service, spool=str(spool),
                        n=3000, timeout=timeout)
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    assert out["flushed"] is False
    ids = out["ids"]
    assert len(set(ids)) == 3000
    with LocalIngestServer(api_key=KEY) as server:
        nxt = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool)
        nxt.start()
        assert nxt.flush(60)
        assert server.event_ids == set(ids)
        assert len(server.events) == len(ids) and server.duplicates_received == 0
        assert nxt.shutdown(10)


# -- when the delivery loop commits, and what a flush that ran out of time waits for ---------------------


def due(since: float, hands_out_unwritten: bool = True, **flags: bool) -> tuple[bool, bool]:
    """`commit_due` at a commit interval of 0.05 s; flags not given are False."""
    every = {"stopping": False, "flush_began": False, "flush_asks": False, "flush_waits": False, "full_batch": False}
    return commit_due(since, 0.05, hands_out_unwritten, **{**every, **flags})


def test_a_healthy_spool_commits_old_events_every_half_interval_and_everything_when_a_flush_asks() -> None:
    # events handed out before their write: every half interval, what is older than the last commit
    assert due(0.024) == (False, False)
    assert due(0.024, flush_waits=True, full_batch=True) == (False, False)  # a flush waiting changes nothing
    assert due(0.025, flush_waits=True) == (True, False)
    assert due(0.0, flush_waits=True, flush_began=True) == (True, True)  # a flush begins: everything, now
    assert due(0.0, flush_waits=True, flush_asks=True) == (True, True)  # a flush out of time: everything, now
    assert due(0.0, stopping=True) == (True, True)


def test_a_spool_that_hands_out_only_written_events_commits_at_every_loop_while_a_flush_waits() -> None:
    assert due(0.0, False) == (False, True)
    assert due(0.0, False, flush_waits=True) == (True, True)
    assert due(0.0, False, full_batch=True) == (True, True)
    assert due(0.05, False) == (True, True)


def test_a_commit_counts_as_written_only_once_the_writers_job_is_taken_in(tmp_path: Path) -> None:
    buffer = paced(tmp_path / "spool")
    try:
        assert buffer.written()
        buffer.intake.extend((i, body(i)) for i in range(1, 51))
        buffer.commit(True)  # handed to the writer thread
        job = buffer._job
        assert job is not None and not buffer.written()
        assert wait_for(job.done.is_set, 60)
        assert not buffer.written()  # done, but not yet taken in by the delivery thread
        buffer.commit(False)
        assert buffer.written() and buffer.stored == 50
        assert list(read_spool(tmp_path / "spool")) == [body(i) for i in range(1, 51)]
    finally:
        buffer.close(delete_if_empty=False)


@contextlib.contextmanager
def silent_client(spool: Path) -> Iterator[OpenMonetize]:
    """A spool client of a service that accepts connections and never answers (its events stay in flight), and
    nothing written by the cadence (commit interval 60 s); shut down out of time at the end (0.5 s)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    om = OpenMonetize(api_key=KEY, base_url=f"http://127.0.0.1:{silent.getsockname()[1]}", spool_dir=spool,
                      spool_commit_interval=60, flush_interval=0.01, request_timeout=60, shutdown_timeout=1)
    try:
        yield om
    finally:
        om.shutdown(0.5)
        silent.close()


def test_flush_that_runs_out_of_time_returns_with_what_it_waited_for_on_disk(tmp_path: Path) -> None:
    # in process: the spool file, read by another connection the moment flush(0) returns, holds every event
    spool = tmp_path / "spool"
    with silent_client(spool) as om:
        ids = {om.track_custom_event(customer_id="c", feature_id="f", unit_type="calls", quantity=i + 1)
               for i in range(1000)}
        assert om.flush(0) is False
        assert {json.loads(b)["event_id"] for b in read_spool(spool)} == ids


def test_a_flush_from_on_error_on_the_delivery_thread_returns_by_its_timeout(tmp_path: Path) -> None:
    # on_error runs on the delivery thread: a flush there cannot wait for that thread's own commit (it would
    # never return); it returns False by its timeout, as without a spool
    server = LocalIngestServer().start()
    answers: list[bool] = []
    om: OpenMonetize

    def on_error(failure: object) -> None:
        if not answers:
            answers.append(om.flush(0.05))

    om = OpenMonetize(api_key=server.api_key, base_url=server.url, spool_dir=tmp_path / "spool", on_error=on_error,
                      flush_interval=0.01)
    try:
        server.reject_customers({"refused"}, status=400)
        om.track_custom_event(customer_id="refused", feature_id="f", unit_type="calls", quantity=1)
        assert wait_for(lambda: bool(answers), timeout=30)
        assert answers == [False]
    finally:
        om.shutdown(5)
        server.stop()


def test_a_flush_that_runs_out_of_time_during_a_long_adoption_returns_after_the_chunk_in_progress(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # adopting a dead process's large file runs on the delivery thread, chunk by chunk, committing what was
    # tracked between chunks: a flush out of time returns once such a commit holds what it waited for, not
    # at the end of the whole adoption (which can take seconds, and stretch a SIGTERM's shutdown)
    spool = tmp_path / "spool"
    make_orphan(spool, [body(i, "old") for i in range(3 * CHUNK)])
    clients: list[OpenMonetize] = []
    at_second, flushed = threading.Event(), threading.Event()
    released_by_flush: list[bool] = []
    real = SpoolBuffer._adopt_chunk
    chunks = 0

    def gated(self: SpoolBuffer, *args: Any) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 2:  # held until the flush has run out of time and asked for its write
            at_second.set()
            assert wait_for(lambda: clients[0]._worker is not None and clients[0]._worker.commits_wanted > 0, 60)
        elif chunks == 3:  # held until that flush returned (before the fix, it waited for the adoption's end)
            released_by_flush.append(flushed.wait(60))
        real(self, *args)

    monkeypatch.setattr(SpoolBuffer, "_adopt_chunk", gated)
    with silent_client(spool) as om:
        clients.append(om)
        try:
            om.start()
            assert at_second.wait(60)
            ids = {om.track_custom_event(customer_id="c", feature_id="f", unit_type="calls", quantity=i + 1)
                   for i in range(100)}  # tracked while the adoption runs
            assert om.flush(0) is False
            flushed.set()
            assert ids <= {json.loads(b)["event_id"] for b in read_spool(spool)}
            assert wait_for(lambda: bool(released_by_flush), 60)
            assert released_by_flush == [True]
        finally:
            flushed.set()  # (the adoption goes on before the shutdown, whatever failed)


def test_a_shutdown_out_of_time_counts_the_events_in_flight_among_those_left_in_the_spool(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # events sent and never answered are on disk (a flush's commit) and stay for the next process, as the
    # events not yet sent do: the warning counts both (it counted only the latter: "0 events stay")
    spool = tmp_path / "spool"
    with silent_client(spool) as om:
        for i in range(100):
            om.track_custom_event(customer_id="c", feature_id="f", unit_type="calls", quantity=i + 1)
        threading.Thread(target=om.flush, args=(60,), daemon=True).start()  # waits: no answer comes
        assert wait_for(lambda: om.stats()["requests"] >= 1 and om.stats()["spooled"] == 100, 60)
    assert len(list(read_spool(spool))) == 100
    assert f"100 events stay in the spool {spool} for the next process" in caplog.text
