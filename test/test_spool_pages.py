"""What delivering a spool's groups writes (issue 14, third session): a group deleted frees its page, and
the spool does not write that page again to zero it (SQLite built with SECURE_DELETE, as Debian's and
Ubuntu's are, would: one more 16 KB page to the WAL, then to the file, per group delivered)."""

from __future__ import annotations

import os

from test_spool import body
from test_spool_groups import rows_in
from test_spool_unwritten import paced, written

from openmonetize.lib.spool_format import PAGE_SIZE


def test_recording_delivered_groups_writes_a_few_pages_not_one_per_group(tmp_path):
    buffer = paced(tmp_path / "spool")
    buffer.intake.extend((i, body(i)) for i in range(1, 20_001))
    written(buffer)
    groups = rows_in(buffer.path)
    db = buffer._db
    assert db is not None and groups >= 50
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    wal = f"{buffer.path}-wal"
    assert os.path.getsize(wal) == 0
    delivered = 0
    while delivered < 8_000:  # 40%: less than half the file is then free, so none of it is given back yet
        batch = buffer.take(500, 1 << 30)
        assert batch is not None
        buffer.ack(batch)
        delivered += len(batch)
    written(buffer)  # one transaction deletes the delivered groups
    deleted = groups - rows_in(buffer.path)
    assert deleted >= 50
    assert os.path.getsize(wal) < 16 * PAGE_SIZE  # (deleting them zeroed would write `deleted` pages more)
    buffer.close()
