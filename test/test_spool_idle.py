"""An idle spool client's delivery loop waits the long way (issue 14, fourth session): half a commit
interval only while a commit has anything to do, else until the flush interval ends, and the next tracked
event wakes it, so that it is still on disk within a commit interval. The wait is computed against an
injected time (`DeliveryWorker.wait_timeout`), the loop itself driven through a real client and server.
"""

from __future__ import annotations

from conftest import wait_for
from test_spool import KEY, body
from test_spool_groups import rows_in
from test_spool_unwritten import written

from openmonetize import OpenMonetize
from openmonetize.lib.buffers import SpoolBuffer
from openmonetize.lib.delivery import DeliverySettings, DeliveryWorker, Dispatcher, Stats
from openmonetize.models.ingest_response import IngestResponse
from openmonetize.testing import LocalIngestServer

SETTINGS = DeliverySettings(flush_interval=0.5, commit_interval=0.05)
NOW = 1000.0


def _unused_send(body: bytes, count: int) -> IngestResponse:
    raise AssertionError("nothing is sent here")


def _worker(tmp_path) -> tuple[DeliveryWorker, SpoolBuffer]:
    buffer = SpoolBuffer(tmp_path / "spool", report=lambda failure: None)
    buffer.open()
    buffer.adopt_orphans()  # (as the loop does when it starts)
    dispatcher = Dispatcher(buffer, _unused_send, SETTINGS, Stats(), lambda failure: None, clock=lambda: NOW)
    return DeliveryWorker(dispatcher, 1 << 20), buffer  # paces the buffer; its threads are not started


def test_with_nothing_to_commit_the_loop_waits_for_the_flush_interval_not_half_a_commit_interval(tmp_path):
    worker, _ = _worker(tmp_path)
    assert worker.wait_timeout(NOW, last_send=NOW) == SETTINGS.flush_interval  # before: 0.025
    assert worker.idle


def test_anything_a_commit_would_do_shortens_the_wait_and_it_is_long_again_once_committed(tmp_path):
    worker, buffer = _worker(tmp_path)
    short = SETTINGS.commit_interval / 2
    buffer.intake.extend((i, body(i)) for i in range(1, 11))  # tracked, not yet written
    assert worker.wait_timeout(NOW, last_send=NOW) == short and not worker.idle
    written(buffer)
    assert buffer.stored == 10
    assert worker.wait_timeout(NOW, last_send=NOW) == SETTINGS.flush_interval  # on disk: waiting to be sent
    batch = buffer.take(5, 1 << 30)
    assert batch is not None
    buffer.ack(batch)  # acknowledged: to be recorded at the next commit
    assert worker.wait_timeout(NOW, last_send=NOW) == short
    written(buffer)
    assert buffer.stored == 5
    assert worker.wait_timeout(NOW, last_send=NOW) == SETTINGS.flush_interval


def test_an_event_tracked_while_the_loop_waits_the_long_way_is_on_disk_without_waiting_for_it(tmp_path):
    """A flush interval of an hour: only the wake-up at `track_*` can get the event written in time (the
    bound here is generous; the promise is a commit interval)."""
    server = LocalIngestServer(api_key=KEY)
    server.start()
    try:
        om = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=tmp_path / "spool", flush_interval=3600)
        try:
            worker = om._worker
            assert worker is not None and wait_for(lambda: worker.idle, 60)
            om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=1)
            assert isinstance(om._buffer, SpoolBuffer)
            path = om._buffer.path
            assert wait_for(lambda: rows_in(path) == 1, 60)
            assert om.flush(60)
        finally:
            om.shutdown(60)
        assert len(server.event_ids) == 1
    finally:
        server.stop()
