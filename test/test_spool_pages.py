"""What delivering a spool's groups writes (issue 14, third session): a group deleted frees its page, and
the spool does not write that page again to zero it (SQLite built with SECURE_DELETE, as Debian's and
Ubuntu's are, would: one more 16 KB page to the WAL, then to the file, per group delivered)."""

from __future__ import annotations

import os
from pathlib import Path

from test_spool import body, drain
from test_spool_groups import rows_in
from test_spool_unwritten import paced, written

from openmonetize.lib import spool_writer
from openmonetize.lib.spool_format import PAGE_SIZE


def on_disk(path: Path) -> int:
    """The file and its WAL."""
    return os.path.getsize(path) + os.path.getsize(f"{path}-wal")


def test_recording_delivered_groups_writes_a_few_pages_not_one_per_group(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 10_001))
    written(buffer)
    groups = rows_in(buffer.path)
    db = buffer._db
    assert db is not None and groups >= 100
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    wal = f"{buffer.path}-wal"
    assert os.path.getsize(wal) == 0
    delivered = 0
    while delivered < 4_000:  # 40%: less than half the file is then free, so none of it is given back yet
        batch = buffer.take(500, 1 << 30)
        assert batch is not None
        buffer.ack(batch)
        delivered += len(batch)
    written(buffer)  # one transaction deletes the delivered groups
    deleted = groups - rows_in(buffer.path)
    assert deleted >= 32
    assert os.path.getsize(wal) < 16 * PAGE_SIZE  # (deleting them zeroed would write `deleted` pages more)
    buffer.close()


def test_a_delivered_file_is_given_back_over_the_next_due_commits_with_nothing_else_to_write(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_writer, "VACUUM_STEP", 4 * PAGE_SIZE)  # (so that it takes many steps)
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 4_001))
    written(buffer)
    assert on_disk(buffer.path) > 40 * PAGE_SIZE
    assert drain(buffer) == [body(i) for i in range(1, 4_001)]
    written(buffer)  # the deletions recorded, and the first step given back
    assert buffer.stored == 0 and rows_in(buffer.path) == 0
    for _ in range(200):  # due commits, with nothing tracked or resolved meanwhile
        if on_disk(buffer.path) < 10 * PAGE_SIZE:
            break
        written(buffer)
    assert on_disk(buffer.path) < 10 * PAGE_SIZE
    buffer.close()
