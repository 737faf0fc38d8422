"""Rows on disk make progress behind a producer that keeps the intake full (issue 14, fourth session).

A healthy paced spool hands out the events not yet written first (test_spool_fresh_first), but once rows
have waited on disk (what a dead process left and this one adopted, what an outage left) for
`_BACKLOG_PATIENCE` due commits (a second at the default interval), those events take at most half of a
batch, in events and in bytes: a producer above what delivery sustains would otherwise fill every batch
with new events and delay the backlog without bound (and a `flush()` with it). Driven as the delivery loop
drives it (a due commit every half interval), against a fake transport and an injected clock (no sockets,
no sleeps).
"""

from __future__ import annotations

import json

from conftest import wait_for
from test_dispatcher import Clock, FakeService
from test_spool import body, make_orphan
from test_spool_fresh_first import periodic
from test_spool_unwritten import paced

from openmonetize.lib.buffers import _BACKLOG_PATIENCE, SpoolBuffer
from openmonetize.lib.delivery import DeliverySettings, Dispatcher, Stats

BACKLOG = 300
BATCH = 100
# rounds (one due commit each) until the rows adopted are delivered, at most: they wait for the patience,
# then take half of each batch (and the loop's first round, and one of slack)
BOUND = _BACKLOG_PATIENCE + 2 * BACKLOG // BATCH + 2


def _loop_round(d: Dispatcher, buffer: SpoolBuffer, clock: Clock, settings: DeliverySettings) -> None:
    """One turn of the delivery loop: a periodic commit (half an interval later), its write taken in, then
    what is due is sent and answered."""
    clock.now += settings.commit_interval / 2
    buffer.commit(True, young=False)
    write = buffer._job
    assert write is None or wait_for(write.done.is_set, 60)
    buffer.commit(False)
    for job in d.next_jobs(due=True):
        d.resolve(d.attempt(job))


def _delivery(tmp_path, service: FakeService) -> tuple[Dispatcher, SpoolBuffer, Clock, DeliverySettings]:
    directory = tmp_path / "spool"
    directory.mkdir()
    make_orphan(directory, [body(i, "orphan") for i in range(1, BACKLOG + 1)])  # a dead process's rows
    buffer = paced(directory)
    assert buffer.adopt_orphans() == BACKLOG and buffer.stored == BACKLOG
    clock = Clock()
    settings = DeliverySettings(batch_size=BATCH, max_concurrent_requests=1)
    return Dispatcher(buffer, service, settings, Stats(), lambda failure: None, clock=clock), buffer, clock, settings


def test_a_producer_that_fills_every_batch_does_not_starve_the_rows_on_disk(tmp_path):
    service = FakeService()
    d, buffer, clock, settings = _delivery(tmp_path, service)
    orphans = {f"ev-{i:06d}" for i in range(1, BACKLOG + 1)}
    seq = 0
    rounds = 0
    while not orphans <= set(service.stored):
        rounds += 1
        # before the fix, every batch was new events: the orphans waited for as long as the producer ran
        assert rounds <= BOUND, f"{len(orphans - set(service.stored))} orphans still waiting"
        # the producer tracks a batch per round, as much as one request delivers: the intake never runs dry
        buffer.intake.extend((seq + i, body(BACKLOG + seq + i)) for i in range(1, BATCH + 1))
        seq += BATCH
        _loop_round(d, buffer, clock, settings)
    for request in service.requests:
        assert len(request) == BATCH
    # until the patience ran out, new events only (they skipped the disk); then half of each batch was the
    # backlog's oldest rows, in order, and the other half new events
    sharing = [request for request in service.requests if request[0] == "ev-000001"]
    assert len(sharing) == 1 and service.requests.index(sharing[0]) >= _BACKLOG_PATIENCE - 1
    assert sharing[0][:BATCH // 2] == [f"ev-{i:06d}" for i in range(1, BATCH // 2 + 1)]
    assert all(int(event_id[3:]) > BACKLOG for event_id in sharing[0][BATCH // 2:])


def test_new_events_take_at_most_half_of_a_batch_in_bytes_while_rows_wait_on_disk(tmp_path):
    _, buffer, _, _ = _delivery(tmp_path, FakeService())
    size = len(body(1, "orphan")) + 1
    buffer.intake.extend((i, body(BACKLOG + i)) for i in range(1, BATCH + 1))
    batch = buffer.take(BATCH, 10 * size)  # bytes bind before the count: ten events fit
    assert batch is not None and len(batch) == 10 and b"orphan" not in b"".join(batch.bodies)  # (patience)
    buffer.give_back(batch)
    for _ in range(_BACKLOG_PATIENCE):  # (those given back are written meanwhile: queued behind the orphans)
        periodic(buffer)
    buffer.intake.extend((i, body(2 * BACKLOG + i)) for i in range(1, BATCH + 1))
    batch = buffer.take(BATCH, 10 * size)
    assert batch is not None and sum(map(len, batch.bodies)) + len(batch) <= 10 * size
    customers = [json.loads(b)["customer_id"] for b in batch.bodies]
    assert customers.count("orphan") >= 4 and customers.count("cust_1") >= 4, customers
    assert customers == sorted(customers, key=lambda c: c != "orphan")  # the disk's first within the batch


def test_without_a_backlog_new_events_fill_the_whole_batch(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 2 * BATCH + 1))
    batch = buffer.take(BATCH, 1 << 30)
    assert batch is not None and batch.bodies == [body(i) for i in range(1, BATCH + 1)]
    size = len(body(1)) + 1
    batch = buffer.take(BATCH, 10 * size)
    assert batch is not None and len(batch) == 10  # (bodies of equal length: ten fit)


def test_a_flush_behind_a_full_intake_ends_once_the_backlog_is_delivered(tmp_path):
    """What a flush waits for (the lowest seq not resolved: the adopted rows' is 0) is reached while the
    producer still keeps every batch full."""
    service = FakeService()
    d, buffer, clock, settings = _delivery(tmp_path, service)
    seq = 0
    rounds = 0
    while d.low_seq() <= 0:
        rounds += 1
        assert rounds <= BOUND, "the adopted rows (seq 0) are still unresolved"
        buffer.intake.extend((seq + i, body(BACKLOG + seq + i)) for i in range(1, BATCH + 1))
        seq += BATCH
        _loop_round(d, buffer, clock, settings)
