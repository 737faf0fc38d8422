"""OpenMonetize background delivery against a real LocalIngestServer over loopback, with injected faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for
from pydantic import ValidationError

from openmonetize import DeliveryFailure, OpenMonetize, TokenUsageEvent
from openmonetize.lib.retry import RetryPolicy
from openmonetize.testing import LocalIngestServer

KEY = "sk_delivery_test_key"


def token_usage(om: OpenMonetize, customer: str = "cust_1", **extra: object) -> str:
    return om.track_token_usage(customer_id=customer, feature_id="chat", provider="openai", model="gpt-4o",
                                input_tokens=120, output_tokens=30, **extra)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_script(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def failures() -> list[DeliveryFailure]:
    return []


@pytest.fixture
def om(server: LocalIngestServer, failures: list[DeliveryFailure]):
    client = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, flush_interval=0.05)
    yield client
    client.shutdown(10)


@pytest.fixture
def server():
    with LocalIngestServer(api_key=KEY) as srv:
        yield srv


def test_track_returns_the_id_and_delivers(om, server):
    event_id = token_usage(om, cached_input_tokens=100, reasoning_tokens=10, metadata={"route": "/chat"})
    assert om.flush(10) is True
    [stored] = server.events
    assert stored["event_id"] == event_id
    assert (stored["input_tokens"], stored["cached_input_tokens"], stored["reasoning_tokens"]) == (120, 100, 10)
    assert stored["metadata"] == {"route": "/chat"}
    image_id = om.track_image_generation(customer_id="c", feature_id="img", provider="openai", model="gpt-image-1",
                                         image_count=2, quality="hd")
    custom_id = om.track_custom_event(customer_id="c", feature_id="pdf", unit_type="pages", quantity=7)
    prebuilt = TokenUsageEvent(customer_id="c", feature_id="f", provider="p", model="m", input_tokens=1,
                               output_tokens=1)
    assert om.track(prebuilt) == prebuilt.event_id
    dict_id = om.track({"event_type": "CUSTOM", "customer_id": "c", "feature_id": "f", "unit_type": "calls",
                        "quantity": 1})
    assert om.flush(10)
    assert server.event_ids == {event_id, image_id, custom_id, prebuilt.event_id, dict_id}
    assert om.stats()["sent"] == 5 and om.stats()["queued"] == 0


def test_bad_input_raises_at_the_call_site_and_nothing_is_queued(om, server):
    with pytest.raises(ValidationError, match="input_tokens"):
        om.track_token_usage(customer_id="c", feature_id="f", provider="p", model="m", input_tokens=-1,
                             output_tokens=1)
    with pytest.raises(ValidationError, match="reasoning_tokens=9 exceeds output_tokens=1"):
        om.track_token_usage(customer_id="c", feature_id="f", provider="p", model="m", input_tokens=1,
                             output_tokens=1, reasoning_tokens=9)
    with pytest.raises(ValidationError, match="event_type"):
        om.track({"event_type": "VIDEO", "customer_id": "c", "feature_id": "f"})
    assert om.flush(5)
    assert om.stats()["queued"] == 0 and server.events == []


def test_20000_events_from_threads_through_30_percent_faults_arrive_exactly_once(server, failures):
    server.set_fault_rate(0.3, seed=7, retry_after=0.05, delay=0.2)
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, flush_interval=0.05)
    ids: list[list[str]] = [[] for _ in range(8)]

    def work(n: int) -> None:
        for i in range(2500):
            ids[n].append(token_usage(om, customer=f"cust_{n}", metadata={"i": i}))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert om.flush(120) is True
    tracked = [i for chunk in ids for i in chunk]
    assert len(set(tracked)) == 20_000
    assert server.event_ids == set(tracked)
    assert len(server.events) == 20_000
    assert server.faults_injected > 0
    stats = om.stats()
    assert stats["retried"] > 0 and stats["dropped"] == 0 and stats["rejected"] == 0
    assert stats["sent"] + stats["duplicates"] == 20_000
    assert failures == []
    om.shutdown(10)


def test_a_permanent_400_is_not_retried_and_reaches_on_error(om, server, failures):
    server.fail_next(1, status=400, body={"error": "VALIDATION_ERROR", "message": "feature unknown",
                                          "details": [{"path": "events[0].feature_id", "message": "unknown"}]})
    event_id = token_usage(om)
    assert om.flush(10) is False  # resolved, but not delivered
    assert server.request_count == 1
    [failure] = failures
    assert failure.kind == "rejected" and failure.status == 400 and failure.event_ids == [event_id]
    assert "feature unknown" in failure.reason
    assert failure.details == [{"path": "events[0].feature_id", "message": "unknown"}]
    assert om.stats()["rejected"] == 1 and server.events == []


def test_per_event_rejections_are_reported_and_the_rest_not_resent(om, server, failures):
    server.reject_customers({"cust_gone"})
    good = [token_usage(om) for _ in range(3)]
    gone = token_usage(om, customer="cust_gone")
    assert om.flush(10) is False
    assert server.event_ids == set(good)
    [failure] = failures
    assert failure.kind == "rejected" and failure.event_ids == [gone]
    assert "CUSTOMER_NOT_FOUND" in failure.reason
    assert server.request_count == 1 and server.duplicates_received == 0
    assert om.stats()["rejected"] == 1 and om.stats()["sent"] == 3


def test_retry_after_is_honoured(om, server):
    server.fail_next(1, status=429, retry_after=1.5)
    token_usage(om)
    started = time.monotonic()
    assert om.flush(20)
    assert time.monotonic() - started >= 1.4
    assert server.request_count == 2 and len(server.events) == 1


def test_5xx_and_dropped_connections_are_retried_with_the_same_ids(om, server):
    server.fail_next(2, status=503)
    server.drop_next(2)
    ids = {token_usage(om) for _ in range(10)}
    assert om.flush(30)
    assert server.event_ids == ids and server.duplicates_received == 0
    assert om.stats()["retried"] >= 4


def test_an_outage_of_many_attempts_still_delivers(server, failures):
    server.fail_next(12, status=500)
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, flush_interval=0.05,
                      retry_policy=RetryPolicy(base=0.05, cap=0.5))
    ids = {token_usage(om) for _ in range(5)}
    assert om.flush(60)
    assert server.event_ids == ids and failures == []
    assert om.stats()["retried"] == 12
    om.shutdown(5)


def test_413_splits_the_batch(failures):
    with LocalIngestServer(api_key=KEY, max_body_bytes=20_000) as small:
        om = OpenMonetize(api_key=KEY, base_url=small.url, on_error=failures.append, flush_interval=0.05)
        ids = {token_usage(om, metadata={"pad": "x" * 200}) for _ in range(200)}
        assert om.flush(30)
        assert small.event_ids == ids and failures == []
        om.shutdown(5)


def test_failures_a_flush_never_asks_about_take_bounded_memory(server, failures):
    # A service that tracks and never flushes, with events failing all along (dropped here; a customer the
    # service refuses is the same): what flush() needs of them stays bounded, and its answers stay exact.
    server.set_fault_rate(1.0, seed=1, statuses=(503,), retry_after=None, delay=0, drop=False)
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, max_queue_size=10,
                      block_timeout=0, flush_interval=0.01, retry_policy=RetryPolicy(base=0.01, cap=0.05))
    tracked = [token_usage(om) for _ in range(6000)]
    dropped = {i for f in failures if f.kind == "dropped" for i in f.event_ids}
    worker = om._worker
    assert worker is not None and len(dropped) >= 5000
    with worker.resolved:
        assert len(worker.failures.seqs) <= 2048
    server.set_fault_rate(0.0)
    assert om.flush(60) is False  # the drops
    assert om.flush(60) is True  # and nothing since
    last = token_usage(om)
    assert om.flush(60) is True
    assert server.event_ids == set(tracked) - dropped | {last}
    om.shutdown(5)


def test_gzip_bodies(server, failures):
    om = OpenMonetize(api_key=KEY, base_url=server.url, gzip=True, flush_interval=0.05)
    ids = {token_usage(om) for _ in range(50)}
    assert om.flush(10)
    assert server.event_ids == ids and server.gzip_requests >= 1
    om.shutdown(5)


def test_back_pressure_without_spool_blocks_then_reports_the_drop(server, failures):
    server.delay_next(3, seconds=2.0)
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, max_queue_size=10,
                      block_timeout=0.05, batch_size=5, max_concurrent_requests=1, flush_interval=0.01)
    tracked = [token_usage(om) for _ in range(40)]
    stats = om.stats()
    assert stats["dropped"] > 0
    dropped = [i for f in failures if f.kind == "dropped" for i in f.event_ids]
    assert len(dropped) == stats["dropped"]
    assert all("spool_dir" in f.reason for f in failures)
    assert om.flush(60) is False  # some were dropped
    assert om.flush(60) is True  # and nothing since
    assert server.event_ids | set(dropped) == set(tracked)  # nothing lost silently
    assert not server.event_ids & set(dropped)
    om.shutdown(5)


def test_back_pressure_serves_waiting_callers_in_turn(server, failures):
    """A caller that arrives while another waits for room queues behind it instead of taking the room first
    (without turns a fast producer keeps taking freed room and a waiting thread starves into a drop)."""
    server.delay_next(3, seconds=0.5)  # each request frees one place, one at a time
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, max_queue_size=2,
                      block_timeout=60, batch_size=1, max_concurrent_requests=1, flush_interval=0.01)
    first = token_usage(om, customer="c1")
    assert wait_for(lambda: server.request_count >= 1 or len(om._buffer.intake) == 0)  # in flight, held by the server
    queued = [token_usage(om, customer="c2"), token_usage(om, customer="c3")]  # the queue is full now
    ids: dict[str, str] = {}

    def track_as(name: str) -> None:
        ids[name] = token_usage(om, customer=name)

    worker = om._worker
    assert worker is not None
    waiter = threading.Thread(target=track_as, args=("waiter",))
    waiter.start()
    assert wait_for(lambda: len(worker.room_waiters) == 1)
    later = threading.Thread(target=track_as, args=("later",))
    later.start()
    assert wait_for(lambda: len(worker.room_waiters) == 2 or not waiter.is_alive())
    waiter.join(60)
    later.join(60)
    assert om.flush(60) is True and failures == []
    order = [event["customer_id"] for event in server.events]
    assert order == ["c1", "c2", "c3", "waiter", "later"], order
    assert [event["event_id"] for event in server.events] == [first, *queued, ids["waiter"], ids["later"]]
    om.shutdown(5)


def test_back_pressure_with_spool_spills_to_disk_instead_of_dropping(server, failures, tmp_path: Path):
    server.delay_next(2, seconds=1.0)
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, max_queue_size=10,
                      block_timeout=5, batch_size=5, max_concurrent_requests=1, spool_dir=tmp_path)
    tracked = {token_usage(om) for _ in range(300)}
    assert om.stats()["dropped"] == 0 and om.stats()["spooled"] > 0
    assert om.flush(60)
    assert server.event_ids == tracked and failures == []
    om.shutdown(5)


def test_track_on_an_event_loop_never_blocks_it(server, failures):
    server.delay_next(2, seconds=1.0)
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, max_queue_size=5,
                      block_timeout=30, batch_size=5, max_concurrent_requests=1)

    async def main() -> None:
        for _ in range(30):
            token_usage(om)  # with a full queue: dropped at once and reported, not a 30 s wait
        assert await om.aflush(60) is False  # some were dropped

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 30
    assert om.stats()["dropped"] > 0 and any("event loop" in f.reason for f in failures)
    asyncio.run(om.ashutdown(5))


def test_a_child_process_that_exits_without_flush_delivers_everything(server):
    result = run_script(f"""
        import json
        from openmonetize import OpenMonetize
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r})
        ids = [om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=1)
               for _ in range(3000)]
        print(json.dumps(ids))
    """)
    assert result.returncode == 0, result.stderr
    ids = set(json.loads(result.stdout))
    assert len(ids) == 3000 and server.event_ids == ids


def test_a_forked_child_sends_its_events_and_not_the_parents(server, failures):
    server.delay_next(1, seconds=0.5)  # keep the parent's first batch in flight across the fork
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, flush_interval=0.05)
    parent_ids = {token_usage(om, customer="parent") for _ in range(200)}
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: track, exit normally (atexit drains), report ids
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, json.dumps([token_usage(om, customer="child") for _ in range(300)]).encode())
            os.close(write_fd)
            om.flush(30)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child_ids = set(json.loads(pipe.read()))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    more = {token_usage(om, customer="parent") for _ in range(100)}
    assert om.flush(30)
    assert server.event_ids == parent_ids | child_ids | more
    assert server.duplicates_received == 0  # the child did not resend the parent's queue
    assert {e["customer_id"] for e in server.events if e["event_id"] in child_ids} == {"child"}
    om.shutdown(5)


def test_kill_9_with_a_spool_while_the_server_is_down_then_the_next_process_delivers(tmp_path: Path):
    down = f"http://127.0.0.1:{free_port()}"
    result = run_script(f"""
        import json, os, signal, sys, time
        from openmonetize import OpenMonetize
        om = OpenMonetize(api_key={KEY!r}, base_url={down!r}, spool_dir={str(tmp_path)!r})
        ids = [om.track_token_usage(customer_id="c", feature_id="f", provider="p", model="m", input_tokens=i,
                                    output_tokens=1) for i in range(5000)]
        time.sleep(0.5)  # more than the spool's commit interval
        sys.stdout.write(json.dumps(ids)); sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert result.returncode == -signal.SIGKILL
    ids = set(json.loads(result.stdout))
    assert len(ids) == 5000
    with LocalIngestServer(api_key=KEY) as server:
        nxt = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=tmp_path)
        assert nxt.flush(60)  # construction opened the spool: flush alone delivers what the dead one left
        assert server.event_ids == ids
        mine = token_usage(nxt)
        assert nxt.shutdown(10)
        assert server.event_ids == ids | {mine}
    assert list(tmp_path.glob("*.sqlite3")) == []  # an emptied spool leaves no file behind


def test_two_processes_share_a_spool_dir_without_sending_twice(tmp_path: Path, server):
    script = f"""
        import json
        from openmonetize import OpenMonetize
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, spool_dir={str(tmp_path)!r})
        print(json.dumps([om.track_custom_event(customer_id="c", feature_id="f", unit_type="u", quantity=1)
                          for _ in range(2000)]))
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    ids: set[str] = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        ids |= set(json.loads(out))
    assert len(ids) == 6000 and server.event_ids == ids
    assert server.duplicates_received == 0


def test_shutdown_without_spool_reports_what_it_could_not_deliver(server, failures):
    server.set_fault_rate(1.0, seed=1, statuses=(503,), retry_after=None, delay=0, drop=False)
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, flush_interval=0.01)
    ids = {token_usage(om) for _ in range(20)}
    assert om.shutdown(1.0) is False
    reported = {i for f in failures if f.kind in ("undelivered", "dropped") for i in f.event_ids}
    assert reported == ids


@pytest.mark.parametrize("spool", [False, True])
def test_after_a_shutdown_that_ran_out_of_time_no_attempt_starts(server, failures, caplog, tmp_path, spool):
    # What is unresolved was reported undelivered (or left in the spool): the dispatcher ends instead of retrying
    # on its own in a process that goes on (only the attempt in flight at the deadline may still land), says
    # no more "retrying", and closes the spool, so the next client over it delivers everything.
    server.set_fault_rate(1.0, seed=1, statuses=(503,), retry_after=None, delay=0, drop=False)
    spool_dir = tmp_path / "spool" if spool else None
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, flush_interval=0.01,
                      retry_policy=RetryPolicy(base=0.01, cap=0.05), spool_dir=spool_dir)
    ids = {token_usage(om) for _ in range(20)}
    worker = om._worker
    assert worker is not None
    assert om.shutdown(0.5) is False
    caplog.clear()
    after_shutdown = server.request_count
    worker._thread.join(30)
    assert not worker._thread.is_alive()
    assert server.request_count - after_shutdown <= worker.settings.max_concurrent_requests
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    if not spool:
        assert {i for f in failures if f.kind == "undelivered" for i in f.event_ids} == ids
        return
    assert not failures
    server.set_fault_rate(0.0)
    with OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool_dir) as again:
        assert again.flush(30)
    assert server.event_ids == ids


def test_client_lifecycle_and_secrets(server, caplog):
    with pytest.raises(ValueError, match="API key"):
        OpenMonetize(api_key="", base_url=server.url)
    with OpenMonetize(api_key=KEY, base_url=server.url) as om:
        token_usage(om)
        assert KEY not in repr(om)
    assert len(server.events) == 1  # leaving the block flushed
    with pytest.raises(RuntimeError, match="shut down"):
        token_usage(om)
    assert om.shutdown() is True  # idempotent
    assert KEY not in caplog.text


def test_api_key_and_base_url_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENMONETIZE_API_KEY", KEY)
    monkeypatch.setenv("OPENMONETIZE_BASE_URL", server.url)
    om = OpenMonetize()
    token_usage(om)
    assert om.flush(10) and len(server.events) == 1
    om.shutdown(5)


def test_an_idle_client_does_not_spin(om, server):
    token_usage(om)
    assert om.flush(10)
    dispatcher = om._worker
    before = dispatcher.iterations
    time.sleep(1.0)  # flush_interval is 0.05 s here: about 20 loops, not the thousands of a busy loop
    assert dispatcher.iterations - before < 100


def test_batches_are_bounded_by_bytes_as_well_as_count(server):
    om = OpenMonetize(api_key=KEY, base_url=server.url, max_batch_bytes=10_000, flush_interval=0.05)
    ids = {token_usage(om, metadata={"pad": "x" * 400}) for _ in range(100)}  # ~650 bytes each
    assert om.flush(30)
    assert server.event_ids == ids
    assert om.stats()["requests"] >= 100 * 650 // 10_000
    om.shutdown(5)
