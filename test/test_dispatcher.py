"""The Dispatcher's decisions, without sockets or sleeps: a fake service (a function that answers like
the ingest API) and an injected clock. What is asserted here is what the loopback tests in
test_delivery.py show end to end."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from openmonetize.exceptions import ApiException, InvalidResponseError
from openmonetize.lib.buffers import Batch, MemoryBuffer
from openmonetize.lib.delivery import DeliverySettings, Dispatcher, FlushLedger, Stats
from openmonetize.lib.failures import DeliveryFailure
from openmonetize.lib.retry import RetryPolicy, verdict
from openmonetize.models.ingest_response import IngestResponse


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeService:
    """Answers like the ingest API. `script` answers the next requests in order (a status, or a function
    of the ids); after it, `refuse` (400), `forbid` (403) and `down` decide."""

    script: list[int | Callable[[list[str]], IngestResponse]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    forbid: set[str] = field(default_factory=set)
    status: int | None = None  # every request answers this while set
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[list[str]] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)

    def __call__(self, body: bytes, count: int) -> IngestResponse:
        ids = [event["event_id"] for event in json.loads(body)["events"]]
        assert len(ids) == count
        self.requests.append(ids)
        if self.script:
            step = self.script.pop(0)
            if callable(step):
                return step(ids)
            raise _error(step, self.headers)
        if self.status is not None:
            raise _error(self.status, self.headers)
        if self.refuse & set(ids):
            raise _error(400, {})
        if self.forbid & set(ids):
            raise _error(403, {})
        fresh = [i for i in ids if i not in self.stored]
        self.stored.extend(fresh)
        return IngestResponse(accepted=len(fresh), duplicates=len(ids) - len(fresh), rejected=0, errors=[])


def _error(status: int, headers: dict[str, str]) -> ApiException:
    exc = ApiException(status=status, reason=f"HTTP {status}")
    exc.headers = headers
    return exc


def make(service: FakeService, n: int = 0, *, batch_size: int = 1000, concurrency: int = 2,
         policy: RetryPolicy | None = None) -> tuple[Dispatcher, Clock, list[DeliveryFailure], list[str]]:
    buffer = MemoryBuffer()
    ids = [f"e{i:05d}" for i in range(n)]
    for seq, event_id in enumerate(ids, 1):
        buffer.intake.append((seq, json.dumps({"event_id": event_id, "customer_id": "c"}).encode()))
    clock = Clock()
    failures: list[DeliveryFailure] = []
    settings = DeliverySettings(batch_size=batch_size, max_concurrent_requests=concurrency)
    dispatcher = Dispatcher(buffer, service, settings, Stats(), failures.append,
                            policy or RetryPolicy(rng=random.Random(1)), clock)
    return dispatcher, clock, failures, ids


def drive(d: Dispatcher, clock: Clock, max_rounds: int = 10_000) -> None:
    """What DeliveryWorker does, synchronously: send what is due, resolve the answers, and when nothing is
    due, move the clock to the next wake-up. Stops when everything is resolved or only a pause remains."""
    for _ in range(max_rounds):
        jobs = d.next_jobs(due=True)
        if jobs:
            for job in jobs:
                d.resolve(d.attempt(job))
            continue
        if not d.waiting and len(d.buffer) == 0:
            return
        clock.now += max(d.next_wakeup(), 0.001)
    raise AssertionError("the dispatcher did not settle")


def drive_until(d: Dispatcher, clock: Clock, seconds: float) -> None:
    """Drive for `seconds` of fake time (for pauses that end only when the service changes)."""
    end = clock.now + seconds
    while clock.now < end:
        jobs = d.next_jobs(due=True)
        for job in jobs:
            d.resolve(d.attempt(job))
        if not jobs:
            clock.now = min(end, clock.now + max(d.next_wakeup(), 0.001))


def test_one_refused_event_in_1000_is_isolated_and_the_other_999_delivered():
    service = FakeService()
    d, clock, failures, ids = make(service, 1000)
    service.refuse = {ids[637]}
    drive(d, clock)
    assert sorted(service.stored) == sorted(set(ids) - {ids[637]})
    [failure] = failures
    assert failure.kind == "rejected" and failure.event_ids == [ids[637]] and failure.status == 400
    assert d.failed_seqs == [638]
    assert len(service.requests) <= 2 * 10 + 1  # bisecting: about two requests per halving
    assert d.stats.rejected == 1 and d.stats.sent == 999


def test_a_batch_refused_whole_is_refused_event_by_event():
    service = FakeService(status=400)
    d, clock, failures, ids = make(service, 4)
    drive(d, clock)
    assert sorted(i for f in failures for i in f.event_ids) == ids
    assert len(service.requests) == 7  # 4 + 2 + 1
    assert all(f.kind == "rejected" for f in failures)


def test_413_halves_the_batch_and_keeps_the_smaller_size():
    service = FakeService(script=[413])
    d, clock, failures, ids = make(service, 8)
    drive(d, clock)
    assert sorted(service.stored) == ids and failures == []
    assert [len(r) for r in service.requests] == [8, 4, 4]
    assert d.batch_limit == 4  # the service's size limit stays: no 413 for every other batch


def test_401_pauses_keeps_everything_reports_once_and_resumes_by_itself():
    service = FakeService(status=401)
    policy = RetryPolicy(pause_base=5, pause_cap=60, rng=random.Random(2))
    d, clock, failures, ids = make(service, 10, policy=policy)
    drive_until(d, clock, 600)
    assert service.stored == []
    [notice] = failures
    assert notice.kind == "paused" and notice.events == [] and notice.status == 401
    # long, capped backoff: a few probes in ten minutes, one batch each, never two at once
    assert 5 <= len(service.requests) <= 20
    assert all(len(r) == 10 for r in service.requests)
    service.status = None
    drive_until(d, clock, 120)
    assert sorted(service.stored) == ids and len(failures) == 1
    assert d.pauses == 0 and d.low_seq() == float("inf")


def test_402_and_unexpected_statuses_pause_too():
    for status in (402, 404, 301):
        service = FakeService(script=[status])
        d, clock, failures, ids = make(service, 3)
        drive_until(d, clock, 400)
        assert sorted(service.stored) == ids
        assert [f.kind for f in failures] == ["paused"]


def test_403_for_one_customer_refuses_only_its_events():
    service = FakeService()
    d, clock, failures, ids = make(service, 64)
    service.forbid = {ids[5], ids[40]}
    drive(d, clock)
    assert sorted(service.stored) == sorted(set(ids) - service.forbid)
    assert sorted(i for f in failures for i in f.event_ids) == sorted(service.forbid)
    assert all(f.kind == "rejected" and f.status == 403 for f in failures)


def test_403_for_every_event_is_about_the_key_pause_and_refuse_nothing():
    service = FakeService(status=403)
    d, clock, failures, ids = make(service, 16)
    drive_until(d, clock, 30)
    assert [f.kind for f in failures] == ["paused"]
    service.status = None
    drive_until(d, clock, 600)
    assert sorted(service.stored) == ids and [f.kind for f in failures] == ["paused"]


def test_a_2xx_that_does_not_account_for_the_events_is_resent_then_reported_unconfirmed():
    def bogus(ids: list[str]) -> IngestResponse:
        raise InvalidResponseError("accepted + duplicates + rejected = 0, sent 5", status=202)

    service = FakeService(script=[bogus] * 10)
    d, clock, failures, ids = make(service, 5)
    drive(d, clock)
    assert len(service.requests) == d.policy.max_unconfirmed == 3
    [failure] = failures
    assert failure.kind == "unconfirmed" and failure.event_ids == ids and failure.status == 202
    assert d.stats.unconfirmed == 5 and d.stats.sent == 0
    assert sorted(d.failed_seqs) == [1, 2, 3, 4, 5]


def test_a_bad_answer_then_a_good_one_delivers_without_reporting():
    def bogus(ids: list[str]) -> IngestResponse:
        raise InvalidResponseError("not JSON", status=200)

    service = FakeService(script=[bogus])
    d, clock, failures, ids = make(service, 5)
    drive(d, clock)
    assert sorted(service.stored) == ids and failures == [] and d.failed_seqs == []


def test_per_event_errors_in_a_2xx_refuse_those_and_ack_the_rest_without_resending():
    def partial(ids: list[str]) -> IngestResponse:
        return IngestResponse.model_validate({"accepted": 2, "duplicates": 0, "rejected": 1, "errors": [
            {"index": 1, "event_id": ids[1], "code": "CUSTOMER_NOT_FOUND", "message": "no such customer"}]})

    service = FakeService(script=[partial])
    d, clock, failures, ids = make(service, 3)
    drive(d, clock)
    assert len(service.requests) == 1
    [failure] = failures
    assert failure.event_ids == [ids[1]] and "CUSTOMER_NOT_FOUND" in failure.reason
    assert d.stats.sent == 2 and d.stats.rejected == 1


def test_transient_failures_are_counted_once_each_and_retried_with_the_same_ids():
    service = FakeService(script=[500] * 12)
    d, clock, failures, ids = make(service, 5)
    drive(d, clock)
    assert sorted(service.stored) == ids and failures == []
    assert d.stats.requests == len(service.requests) == 13
    assert d.stats.retried == 12
    assert all(r == ids for r in service.requests)


def test_retry_after_holds_every_batch_back():
    service = FakeService(script=[429], headers={"Retry-After": "7"})
    d, clock, _failures, _ids = make(service, 5)
    start = clock.now
    [job] = d.next_jobs(due=True)
    d.resolve(d.attempt(job))
    assert d.next_jobs(due=True) == []
    clock.now = start + 6.9
    assert d.next_jobs(due=True) == []
    clock.now = start + 7.0
    assert len(d.next_jobs(due=True)) == 1
    assert d.stats.requests == 1


def test_while_the_service_is_down_one_batch_probes_and_nothing_new_is_taken():
    service = FakeService(status=503)
    d, clock, failures, ids = make(service, 50, batch_size=10, concurrency=4)
    drive_until(d, clock, 120)
    sizes = {len(r) for r in service.requests}
    assert sizes == {10}
    probed = {tuple(r) for r in service.requests}
    # the first round sends up to 4 batches; after three failures in a row only those are retried
    assert len(probed) <= 4
    assert len(d.buffer) >= 10
    service.status = None
    drive(d, clock)
    assert sorted(service.stored) == ids and failures == []


def test_random_faults_do_not_stall_the_other_batches():
    rng = random.Random(3)
    service = FakeService()
    d, clock, failures, ids = make(service, 5000, batch_size=100, concurrency=2)
    real = service.__call__

    def flaky(body: bytes, count: int) -> IngestResponse:
        if rng.random() < 0.1:
            service.requests.append([])
            raise _error(503, {})
        return real(body, count)

    d._send = flaky
    start = clock.now
    drive(d, clock)
    assert sorted(service.stored) == ids and failures == []
    assert d.stats.retried > 0
    assert clock.now - start < 10  # fake seconds: a failed batch waits alone, the others keep going


def test_the_loop_sleeps_through_a_pause_and_while_every_sender_is_busy():
    service = FakeService(script=[429], headers={"Retry-After": "30"})
    d, clock, _, _ = make(service, 3000, concurrency=2)
    first, second = d.next_jobs(due=True)
    assert d.next_wakeup() == float("inf")  # both senders busy: an answer wakes the loop, not a timer
    d.resolve(d.attempt(first))  # 429: everything waits 30 s
    d.resolve(d.attempt(second))
    assert d.next_wakeup() == pytest.approx(30)  # not 0: the split halves and retries wait too
    clock.now += 30
    assert d.next_wakeup() == 0 and len(d.next_jobs(due=True)) == 2


def test_a_due_job_does_not_spin_the_loop_while_every_sender_is_busy():
    service = FakeService(script=[400])
    d, clock, _, _ = make(service, 3000, concurrency=2)
    first, _second = d.next_jobs(due=True)
    d.resolve(d.attempt(first))  # 400: split, both halves due now
    [_half] = d.next_jobs(due=True)  # one sender free: one half goes, the other is due but must wait
    assert len(d.waiting) == 1 and d.waiting[0].not_before <= clock.now
    assert d.next_wakeup() == float("inf")


def test_low_seq_covers_waiting_and_in_flight_jobs():
    service = FakeService(script=[503])
    d, clock, _, _ = make(service, 3)
    [job] = d.next_jobs(due=True)
    assert d.low_seq() == 1  # in flight
    d.resolve(d.attempt(job))
    assert d.low_seq() == 1  # waiting for its retry
    drive(d, clock)
    assert d.low_seq() == float("inf")


# -- the retry policy --------------------------------------------------------------------------------


def test_verdicts():
    assert [verdict(s) for s in (0, 408, 429, 500, 503, 599)] == ["retry"] * 6
    assert [verdict(s) for s in (400, 413, 422)] == ["isolate"] * 3
    assert verdict(403) == "forbidden"
    assert [verdict(s) for s in (301, 401, 402, 404, 405, 409, 415)] == ["pause"] * 7


def test_backoff_is_full_jitter_under_a_cap():
    policy = RetryPolicy(base=0.5, cap=30, rng=random.Random(4))
    for attempt in range(1, 20):
        ceiling = min(30, 0.5 * 2 ** (attempt - 1))
        draws = [policy.backoff(attempt) for _ in range(200)]
        assert all(0 <= x <= ceiling for x in draws)
        assert max(draws) > ceiling * 0.8


def test_an_answer_whose_handling_raises_keeps_its_batch():
    # a retry policy (the user's subclass, say) that fails once: the batch is no longer in flight, and before this
    # it fell out of everything: never resent, never reported, and flush()'s low water passed it
    class Failing(RetryPolicy):
        failed = False

        def backoff(self, attempt: int) -> float:
            if not self.failed:
                self.failed = True
                raise RuntimeError("a bug in a retry policy")
            return super().backoff(attempt)

    service = FakeService(script=[503])
    d, clock, failures, ids = make(service, 10, policy=Failing(rng=random.Random(2)))
    [job] = d.next_jobs(due=True)
    d.resolve(d.attempt(job))
    assert d.low_seq() == 1 and d.unresolved() == [job.batch]
    drive(d, clock)
    assert sorted(service.stored) == ids and not failures and d.low_seq() == float("inf")


def test_an_answer_whose_handling_always_raises_is_reported_not_resent_forever():
    # a bug that raises at every answer of a batch: after a few tries the batch is reported undelivered (and
    # the dispatcher settles), not resent every second for as long as the process runs
    class Broken(RetryPolicy):
        def backoff(self, attempt: int) -> float:
            raise RuntimeError("a bug in a retry policy")

    service = FakeService(status=503)
    d, clock, failures, ids = make(service, 10, policy=Broken(rng=random.Random(3)))
    drive(d, clock)
    [failure] = failures
    assert failure.kind == "undelivered" and failure.event_ids == ids and "a bug in a retry policy" in failure.reason
    assert len(service.requests) == 3 and d.failed_seqs == list(range(1, 11)) and not d.waiting


def test_pause_is_long_and_capped():
    policy = RetryPolicy(pause_base=5, pause_cap=300, rng=random.Random(5))
    for n in range(1, 15):
        ceiling = min(300, 5 * 2 ** (n - 1))
        assert ceiling / 2 <= policy.pause(n) <= ceiling


def test_backoff_and_pause_stay_capped_after_thousands_of_failures():
    # an outage of a few hours fails a batch past 1024 times: 2 ** 1024 times the base is no float (it raised
    # OverflowError inside the dispatcher, which lost track of the batch)
    policy = RetryPolicy(base=0.5, cap=30, pause_base=5, pause_cap=300, rng=random.Random(6))
    for n in (1025, 5000, 10**6):
        assert 0 <= policy.backoff(n) <= 30
        assert 150 <= policy.pause(n) <= 300


@pytest.mark.parametrize(("value", "seconds"), [
    ("7", 7.0), ("1.5", 1.5), (" 2 ", 2.0), ("0", 0.0), ("999999", 3600.0),
    ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("Wed, 21 Oct 2015 07:27:50 GMT", 0.0),
    ("soon", None), ("-3", None), ("", None),
])
def test_retry_after(value: str, seconds: float | None):
    now = 1445412480.0  # 2015-10-21T07:28:00Z
    assert RetryPolicy().retry_after({"Retry-After": value}, now=now) == seconds


def test_batch_halves_and_subsets_keep_each_events_seq_and_key():
    batch = Batch([b"a", b"b", b"c"], [4, 5, 6], [40, 50, 60])
    left, right = batch.halves()
    assert (left.bodies, left.seqs, left.keys) == ([b"a"], [4], [40])
    assert (right.bodies, right.seqs, right.keys, right.min_seq) == ([b"b", b"c"], [5, 6], [50, 60], 5)
    sub = batch.subset([2, 0])
    assert (sub.bodies, sub.seqs, sub.keys) == ([b"c", b"a"], [6, 4], [60, 40])
    assert batch.request_body() == b'{"events":[a,b,c]}'


@pytest.mark.parametrize("n", [1, 2, 1000])
def test_a_batch_body_is_the_events_in_their_envelope_and_leaves_the_batch_as_it_was(n):
    bodies = [json.dumps({"event_id": f"e{i}", "quantity": i + 1}, separators=(",", ":")).encode() for i in range(n)]
    batch = Batch(list(bodies), list(range(n)), list(range(n)))
    body = batch.request_body()
    assert json.loads(body) == {"events": [json.loads(b) for b in bodies]}
    assert body == b'{"events":[' + b",".join(bodies) + b"]}"
    assert batch.bodies == bodies  # a resend of the same batch builds the same bytes
    assert batch.request_body() == body


@pytest.mark.parametrize("max_bytes", [1, 10, 11, 12, 35, 36, 1000])
def test_memory_take_cuts_a_batch_at_max_bytes_and_keeps_the_rest_in_order(max_bytes: int) -> None:
    buffer = MemoryBuffer()
    bodies = [b"%d" % (10**8 + i) for i in range(10)]  # 9 bytes each, 10 with the comma
    buffer.intake.extend(enumerate(bodies))
    taken: list[bytes] = []
    while (batch := buffer.take(4, max_bytes)) is not None:
        assert 1 <= len(batch) <= 4
        assert len(batch) == 1 or sum(len(body) + 1 for body in batch.bodies) <= max_bytes
        assert batch.seqs == batch.keys == [bodies.index(body) for body in batch.bodies]
        taken += batch.bodies
    assert taken == bodies


class FullLedger:
    """FlushLedger's answers from every failed seq ever recorded, never collapsed."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.floor = 0

    def failed_before(self, ticket: int) -> bool:
        floor, self.floor = self.floor, max(self.floor, ticket)
        return any(floor <= seq < ticket for seq in self.seqs)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["track", "fail", "begin", "answer"]), st.integers(0, 1000)),
                max_size=300))
@example([("track", 0), ("track", 0), ("begin", 0), ("track", 0), ("fail", 0), ("fail", 1), ("answer", 0)])
@example([("track", 0), ("begin", 0), ("track", 0), ("begin", 0), ("answer", 1), ("fail", 1), ("track", 0),
          ("fail", 1)])  # a later flush answered first: the floor above a flush still in progress
def test_the_flush_ledger_collapsed_answers_as_if_it_kept_every_failure(steps):
    # events tracked (seqs), some failing in any order, flushes begun (tickets from the same counter) and answered
    # in any order; a ledger that collapses past 1 seq answers every flush as one that keeps them all
    ledger, full = FlushLedger(compact_at=1), FullLedger()
    seq, unresolved, flushes = 0, [], []
    for action, pick in steps:
        if action == "track":
            seq += 1
            unresolved.append(seq)
        elif action == "fail" and unresolved:
            failed = unresolved.pop(pick % len(unresolved))
            ledger.add([failed])
            full.seqs.append(failed)
        elif action == "begin":
            seq += 1
            ledger.begin(seq)
            flushes.append(seq)
        elif action == "answer" and flushes:
            ticket = flushes.pop(pick % len(flushes))
            assert ledger.failed_before(ticket) == full.failed_before(ticket)
            ledger.end(ticket)
        assert len(ledger.seqs) <= 2 * len(full.seqs) + 1
    for ticket in flushes:
        assert ledger.failed_before(ticket) == full.failed_before(ticket)
    seq += 1
    assert ledger.failed_before(seq) == full.failed_before(seq)  # a flush that begins after everything
