"""A healthy paced spool hands out the events not yet staged for a write before those on disk (issue 14,
third session): an event acknowledged before its commit is never written, so under a backlog the freshest
events are the ones that can still skip the disk, while those on disk are safe and wait. The order across
batches is no promise of the SDK; a batch still never exceeds its bytes, and the disk's events come first
within it. The delivery loop's periodic commits (every half interval) write what is older than the last
one, so that each event has at least half an interval to be acknowledged before its write, and at most a
whole one, as before. Driven as the delivery loop drives it (`pace`), as in test_spool_unwritten.
"""

from __future__ import annotations

from conftest import wait_for
from test_spool import body
from test_spool_groups import left_for_the_next_process, rows_in
from test_spool_unwritten import paced, written

from openmonetize.lib.buffers import SpoolBuffer


def test_events_not_yet_written_go_out_before_the_backlog_on_disk_and_are_never_written(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 101))
    written(buffer)  # a backlog of 100 on disk, none handed out
    assert buffer.stored == 100
    buffer.intake.extend((i, body(i)) for i in range(101, 151))
    batch = buffer.take(50, 1 << 30)
    assert batch is not None and batch.bodies == [body(i) for i in range(101, 151)]
    buffer.ack(batch)
    written(buffer)
    assert buffer.stored == 100 and buffer.low_seq() == 1
    assert left_for_the_next_process(buffer) == [body(i) for i in range(1, 101)]  # 101-150 never written


def test_the_backlog_tops_up_a_batch_disk_first_within_it_and_all_of_it_resolves(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 11))
    written(buffer)
    buffer.intake.extend((i, body(i)) for i in range(11, 13))
    batch = buffer.take(5, 1 << 30)
    assert batch is not None and batch.bodies == [body(i) for i in (1, 2, 3, 11, 12)]
    buffer.ack(batch)
    assert buffer.stored == 7 and len(buffer) == 7 and buffer.low_seq() == 4
    rest = buffer.take(100, 1 << 30)
    assert rest is not None and rest.bodies == [body(i) for i in range(4, 11)]
    buffer.ack(rest)
    written(buffer)
    assert buffer.stored == 0 and left_for_the_next_process(buffer) == []


def test_a_batch_of_fresh_events_is_not_pushed_past_its_bytes_by_the_backlog(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 11))
    written(buffer)
    buffer.intake.extend((i, body(i)) for i in range(11, 13))
    room = len(body(11)) + len(body(12)) + 2 + len(body(1)) // 2  # the two fresh fit, a third does not
    batch = buffer.take(100, room)
    assert batch is not None and batch.bodies == [body(11), body(12)]
    assert sum(map(len, batch.bodies)) + len(batch) <= room
    buffer.ack(batch)
    rest = buffer.take(100, 1 << 30)
    assert rest is not None and rest.bodies == [body(i) for i in range(1, 11)]


def periodic(buffer: SpoolBuffer) -> None:
    """A delivery loop's periodic commit (every half interval: only what is older than the last one), and
    its result taken in."""
    written(buffer, young=False)


def test_a_periodic_commit_writes_what_was_tracked_before_the_last_one_and_the_rest_at_the_next(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 101))
    periodic(buffer)  # all of them tracked since the last due commit (none): at most half an interval old
    assert buffer.stored == 0 and rows_in(buffer.path) == 0 and len(buffer) == 100
    buffer.intake.extend((i, body(i)) for i in range(101, 201))
    batch = buffer.take(150, 1 << 30)
    assert batch is not None and batch.bodies == [body(i) for i in range(1, 151)]
    buffer.ack(batch.subset(range(50)))
    periodic(buffer)  # 1-100 are older than the last due commit: those unresolved written, in flight or not
    assert buffer.stored == 50 and buffer.low_seq() == 51
    buffer.ack(batch.subset(range(50, 120)))  # 51-100 through the disk's keys, 101-120 never written
    periodic(buffer)
    assert buffer.stored == 80 and buffer.low_seq() == 121
    assert left_for_the_next_process(buffer) == [body(i) for i in range(121, 201)]


def test_a_commit_of_everything_owed_while_the_writer_writes_is_not_narrowed_by_a_periodic_one(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 101))
    buffer.commit(True)  # handed to the writer thread
    buffer.intake.extend((i, body(i)) for i in range(101, 201))
    buffer.commit(True)  # (a flush began: everything) owed while the writer writes
    buffer.commit(True, young=False)  # and a periodic one
    job = buffer._job
    assert job is not None and wait_for(job.done.is_set, 60)
    periodic(buffer)
    assert buffer.stored == 200
    assert left_for_the_next_process(buffer) == [body(i) for i in range(1, 201)]
