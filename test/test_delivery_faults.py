"""Issue 9's fault table, row by row, over loopback against a LocalIngestServer that misbehaves on purpose:
nothing lost, nothing doubled, every event the service refuses kept (spool) or reported (memory)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from openmonetize import DeliveryFailure, OpenMonetize
from openmonetize.lib.retry import RetryPolicy
from openmonetize.testing import LocalIngestServer

KEY = "sk_fault_test_key"
FAST = RetryPolicy(base=0.02, cap=0.2, pause_base=0.1, pause_cap=0.4)


@pytest.fixture
def server():
    with LocalIngestServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture
def failures() -> list[DeliveryFailure]:
    return []


def client(server: LocalIngestServer, failures: list[DeliveryFailure], **options: object) -> OpenMonetize:
    settings: dict[str, object] = {"flush_interval": 0.05, "retry_policy": FAST, **options}
    return OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append, **settings)  # type: ignore[arg-type]


def track(om: OpenMonetize, customer: str = "cust_1", i: int = 0) -> str:
    return om.track_token_usage(customer_id=customer, feature_id="chat", provider="openai", model="gpt-4o",
                                input_tokens=100 + i, output_tokens=10)


def track_1000_with_one_bad(om: OpenMonetize) -> tuple[set[str], str]:
    good = {track(om, i=i) for i in range(999)}
    return good, track(om, customer="cust_refused")


@pytest.mark.parametrize("spool", [False, True])
def test_a_400_for_one_event_in_1000_delivers_the_other_999(server, failures, tmp_path: Path, spool: bool):
    server.reject_customers({"cust_refused"}, status=400)
    om = client(server, failures, spool_dir=tmp_path if spool else None, flush_interval=10)
    good, bad = track_1000_with_one_bad(om)
    assert om.flush(60) is False  # resolved, but one event was refused
    assert server.event_ids == good and server.duplicates_received == 0
    [failure] = failures
    assert failure.kind == "rejected" and failure.status == 400 and failure.event_ids == [bad]
    stats = om.stats()
    assert stats["rejected"] == 1 and stats["sent"] == 999
    assert stats["dead_letters"] == (1 if spool else 0)
    assert "dead letters" in failure.reason if spool else "dead letters" not in failure.reason
    assert om.shutdown(10) is True  # nothing new since the flush that reported it


def test_a_403_for_one_customer_refuses_only_its_events(server, failures):
    server.reject_customers({"cust_refused"}, status=403)
    om = client(server, failures, flush_interval=10)
    good, bad = track_1000_with_one_bad(om)
    assert om.flush(60) is False
    assert server.event_ids == good
    assert [(f.kind, f.status, f.event_ids) for f in failures] == [("rejected", 403, [bad])]
    om.shutdown(10)


@pytest.mark.parametrize(("status", "spool"), [(401, False), (401, True), (403, False), (402, True)])
def test_a_refused_key_pauses_delivery_and_loses_nothing(server, failures, tmp_path: Path, status: int, spool: bool):
    # a key being rotated: every request refused for a while (a 403 also while the batch is split), then
    # accepted again
    server.fail_next(30, status=status)
    # pauses of at most 0.1 s: 30 refusals are an episode of many pauses without seconds of waiting
    short_pauses = RetryPolicy(base=0.02, cap=0.2, pause_base=0.05, pause_cap=0.1)
    om = client(server, failures, spool_dir=tmp_path if spool else None, flush_interval=10, retry_policy=short_pauses)
    ids = {track(om, i=i) for i in range(300)}
    assert om.flush(60) is True
    assert server.event_ids == ids and server.duplicates_received == 0
    assert [(f.kind, f.status, f.events) for f in failures] == [("paused", status, [])]  # once per episode
    assert om.stats()["rejected"] == 0
    om.shutdown(10)


def test_while_the_key_is_refused_flush_times_out_and_nothing_is_refused(server, failures):
    server.fail_next(1000, status=401)
    om = client(server, failures)
    ids = {track(om, i=i) for i in range(10)}
    assert om.flush(1) is False
    assert om.stats()["queued"] == 10 and om.stats()["rejected"] == 0
    server.reset()
    assert om.flush(60) is True
    assert server.event_ids == ids
    om.shutdown(10)



@pytest.mark.parametrize("how", ["client", "client with a spool", "tracker", "tracker of a shared client"])
def test_shutdown_without_a_timeout_while_the_key_is_refused_ends_by_shutdown_timeout(
        server, failures, tmp_path: Path, how: str):
    # a wrong key at the end of a script: `om.shutdown()` (README's last line), like the exit hook and `with`,
    # waits at most `shutdown_timeout`, then reports (or keeps, with a spool) what is left; it never hangs
    from openmonetize import create_llm_tracker

    server.fail_next(10**6, status=401)
    if how == "tracker":  # a tracker that made its own client
        tracker = create_llm_tracker(api_key=KEY, base_url=server.url, on_error=failures.append, flush_interval=0.05,
                                     retry_policy=FAST, shutdown_timeout=0.2)
        om = tracker.client
    else:
        om = client(server, failures, spool_dir=tmp_path if "spool" in how else None, shutdown_timeout=0.2)
        tracker = create_llm_tracker(client=om)  # flushes the shared client, for at most its shutdown_timeout
    ids = {track(om, i=i) for i in range(10)}
    end = tracker.shutdown if how.startswith("tracker") else om.shutdown
    answers: list[bool] = []
    waiting = threading.Thread(target=lambda: answers.append(end()), daemon=True)
    waiting.start()
    waiting.join(60)
    assert answers == [False]
    if how in ("client", "tracker"):
        assert [(f.kind, set(f.event_ids)) for f in failures if f.kind != "paused"] == [("undelivered", ids)]
    elif how == "client with a spool":
        from openmonetize.lib.buffers import read_spool

        assert {json.loads(b)["event_id"] for b in read_spool(tmp_path)} == ids
    om.shutdown(1)

BROKEN_2XX = {
    "empty": (200, b"", "application/json"),
    "html": (200, b"<html><body>OK</body></html>", "text/html"),
    "empty object": (202, b"{}", "application/json"),
    "null counts": (202, b'{"accepted": null, "duplicates": null, "rejected": null}', "application/json"),
    "string counts": (202, b'{"accepted": "5", "duplicates": "0", "rejected": "0"}', "application/json"),
    "list": (202, b"[1, 2, 3]", "application/json"),
    "204": (204, b"", None),
    "counts short": (202, b'{"accepted": 1, "duplicates": 0, "rejected": 0}', "application/json"),
    "rejected without errors": (202, b'{"accepted": 0, "duplicates": 0, "rejected": 5}', "application/json"),
    "index out of range": (202, b'{"accepted": 4, "duplicates": 0, "rejected": 1, "errors": [{"index": 99,'
                                b' "code": "X", "message": "m"}]}', "application/json"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_2XX))
def test_a_2xx_that_breaks_the_contract_is_not_success(server, failures, case: str):
    status, raw, content_type = BROKEN_2XX[case]
    server.fail_next(1, status=status, raw=raw, content_type=content_type, store=True)  # stored, answered badly
    om = client(server, failures, flush_interval=10)
    ids = {track(om, i=i) for i in range(5)}
    assert om.flush(60) is True  # the resend is counted as duplicates: confirmed
    assert server.event_ids == ids and len(server.events) == 5
    assert failures == []
    assert om.stats()["duplicates"] == 5 and om.stats()["requests"] == 2
    om.shutdown(10)


def test_answers_that_never_confirm_end_unconfirmed_not_forever(server, failures, tmp_path: Path):
    status, raw, content_type = BROKEN_2XX["counts short"]
    server.fail_next(100, status=status, raw=raw, content_type=content_type)
    om = client(server, failures, spool_dir=tmp_path, flush_interval=10)
    ids = {track(om, i=i) for i in range(5)}
    assert om.flush(60) is False
    [failure] = failures
    assert failure.kind == "unconfirmed" and set(failure.event_ids) == ids
    assert server.request_count == FAST.max_unconfirmed
    assert om.stats()["unconfirmed"] == 5 and om.stats()["dead_letters"] == 5
    om.shutdown(10)


def test_a_server_that_trickles_its_answer_cannot_hold_a_sender(server, failures):
    server.trickle_next(2, interval=0.5)  # a ~300-byte answer at 2 bytes/s: minutes per request
    om = client(server, failures, request_timeout=1.0, max_concurrent_requests=1)
    ids = {track(om, i=i) for i in range(20)}
    assert om.flush(60) is True
    assert server.event_ids == ids and failures == []
    assert om.stats()["retried"] >= 1
    om.shutdown(10)


def test_stats_count_real_requests_and_real_retries(server, failures):
    server.fail_next(12, status=500)
    om = client(server, failures)
    ids = {track(om, i=i) for i in range(5)}
    assert om.flush(60) is True
    assert server.event_ids == ids
    stats = om.stats()
    assert (stats["requests"], stats["retried"]) == (server.request_count, 12) == (13, 12)
    om.shutdown(10)
    server.reset()
    server.fail_next(1, status=429, retry_after=0.2)
    om = client(server, failures)
    track(om)
    assert om.flush(60) is True
    assert (om.stats()["requests"], om.stats()["retried"]) == (server.request_count, 1) == (2, 1)
    om.shutdown(10)


def test_8_threads_x_50000_events_with_10_percent_faults_drop_nothing(server, failures):
    server.set_fault_rate(0.1, seed=11, retry_after=0.05, delay=0.1)
    om = OpenMonetize(api_key=KEY, base_url=server.url, on_error=failures.append)  # default settings
    ids: list[list[str]] = [[] for _ in range(8)]

    def work(n: int) -> None:
        ids[n] = [track(om, customer=f"cust_{n}", i=i) for i in range(50_000)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert om.flush(300) is True
    tracked = {i for chunk in ids for i in chunk}
    assert len(tracked) == 400_000
    assert om.stats()["dropped"] == 0 and failures == []
    assert server.event_ids == tracked and len(server.events) == 400_000
    assert server.faults_injected > 0
    om.shutdown(10)


def _orphan_spool(directory: Path, n: int) -> set[str]:
    """A spool file left by a process that died with `n` events in it (its lock is free)."""
    from openmonetize.lib.buffers import SpoolBuffer
    from openmonetize.models.custom_event import CustomEvent

    dead = SpoolBuffer(directory)
    dead.open()
    ids = set()
    for seq in range(1, n + 1):
        event = CustomEvent(customer_id="c", feature_id="f", unit_type="pages", quantity=1)
        dead.intake.append((seq, event.model_dump_json(exclude_none=True).encode()))
        ids.add(event.event_id)
    dead.commit()
    dead.close()
    return ids


def test_a_fresh_client_over_a_dead_processes_spool_delivers_it_on_flush_alone(server, failures, tmp_path: Path):
    orphaned = _orphan_spool(tmp_path, 500)
    om = client(server, failures, spool_dir=tmp_path)
    assert om.flush(60) is True
    assert server.event_ids == orphaned
    om.shutdown(10)


def test_the_first_track_on_an_event_loop_never_waits_for_adopting_a_large_orphan(
        server, failures, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import asyncio

    from openmonetize.lib.buffers import SpoolBuffer

    orphaned = _orphan_spool(tmp_path, 100_000)
    adopting, go_on = threading.Event(), threading.Event()
    real_adopt = SpoolBuffer.adopt_orphans

    def gated_adopt(self: SpoolBuffer, *args: Any) -> int:  # the real adoption, held until the test lets it go on
        adopting.set()
        go_on.wait(60)
        return real_adopt(self, *args)

    monkeypatch.setattr(SpoolBuffer, "adopt_orphans", gated_adopt)
    results: list[object] = []

    async def service() -> None:
        om = client(server, failures, spool_dir=tmp_path)
        results.append(om)
        results.append(track(om))

    runner = threading.Thread(target=asyncio.run, args=(service(),))
    runner.start()
    runner.join(30)  # adoption is held: a caller that waited for it would still be blocked
    assert not runner.is_alive() and len(results) == 2
    assert adopting.wait(30)
    go_on.set()
    om = results[0]
    assert isinstance(om, OpenMonetize)
    assert om.flush(120) is True
    assert server.event_ids == orphaned | {results[1]}
    om.shutdown(10)
