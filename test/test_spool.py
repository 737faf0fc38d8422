"""The spool under faults: a full disk, corrupt and foreign neighbours, unusable directories, dead letters.

The buffer is driven directly (open, commit, take, ack, dead_letter, adopt_orphans: no sockets, no
sleeps); the faults that are about the whole client go through `OpenMonetize` and a LocalIngestServer on
loopback. A full disk is a real, small tmpfs (we run as root); where mounting is not permitted, SQLite's
own `max_page_count` limit raises the same SQLITE_FULL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmonetize import DeliveryFailure, OpenMonetize
from openmonetize.lib.buffers import (
    SPOOL_SUFFIX,
    SpoolBuffer,
    SpoolError,
    inspect_spool,
    quarantined_files,
    read_dead_letters,
    spool_files,
)
from openmonetize.testing import LocalIngestServer

KEY = "sk_spool_test_key_0123456789"
ROOT = Path(__file__).resolve().parent.parent


def body(i: int, customer: str = "cust_1") -> bytes:
    return json.dumps({"event_type": "CUSTOM", "event_id": f"ev-{i:06d}", "customer_id": customer,
                       "feature_id": "pdf", "unit_type": "pages", "quantity": 1,
                       "timestamp": "2026-11-01T08:00:00Z"}, separators=(",", ":")).encode()


def ids_of(bodies: list[bytes]) -> list[str]:
    return [json.loads(b)["event_id"] for b in bodies]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def opened(directory: Path, notices: list[DeliveryFailure] | None = None) -> SpoolBuffer:
    buffer = SpoolBuffer(directory, report=notices.append if notices is not None else lambda f: None)
    buffer.open()
    return buffer


def make_orphan(directory: Path, bodies: list[bytes], dead: int = 0) -> Path:
    """A real spool file left by a process that is gone (built apart, so it adopts nothing, then moved in).
    Its last `dead` events are dead letters."""
    staging = Path(tempfile.mkdtemp(dir=directory.parent))
    buffer = opened(staging)
    buffer.intake.extend(enumerate(bodies, 1))
    buffer.commit()
    if dead:
        batch = buffer.take(len(bodies), 1 << 30)
        assert batch is not None
        tail = batch.subset(range(len(bodies) - dead, len(bodies)))
        assert buffer.dead_letter(tail, DeliveryFailure("rejected", tail.events(), "400 unknown feature",
                                                        status=400))
        buffer.give_back(batch.subset(range(len(bodies) - dead)))
    buffer.close(delete_if_empty=False)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / buffer.path.name
    buffer.path.rename(target)
    shutil.rmtree(staging)
    return target


def drain(buffer: SpoolBuffer) -> list[bytes]:
    """Take and acknowledge everything the buffer holds; the bodies in the order handed out."""
    out: list[bytes] = []
    while (batch := buffer.take(500, 1 << 30)) is not None:
        out += batch.bodies
        buffer.ack(batch)
    return out


class Disk:
    """A small file system that can be filled until SQLite refuses, and given room again."""

    def __init__(self, root: Path, mounted: bool) -> None:
        self.root = root
        self.mounted = mounted
        self.filler = root / "filler"
        self._limited: list[sqlite3.Connection] = []

    def fill(self, db: sqlite3.Connection | None = None) -> None:
        if not self.mounted:  # SQLite's page limit: the same SQLITE_FULL, on this connection only
            assert db is not None
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count = {pages}")
            self._limited.append(db)
            return
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 65536)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 512)
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        for db in self._limited:
            db.execute("PRAGMA max_page_count = 1073741823")
        self._limited.clear()


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m", options: str = "") -> Iterator[Disk]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield Disk(path, mounted)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


# -- a full disk ------------------------------------------------------------------------------------------


def test_a_full_disk_keeps_events_in_memory_in_order_hands_them_out_and_writes_them_back(tmp_path, caplog):
    notices: list[DeliveryFailure] = []
    with small_disk(tmp_path / "disk") as disk:
        buffer = opened(disk.root / "spool", notices)
        buffer.intake.extend((i, body(i)) for i in range(1, 11))
        buffer.commit()
        assert buffer.stored == 10
        disk.fill(buffer._db)
        buffer.intake.extend((i, body(i)) for i in range(11, 3011))
        buffer.commit()  # SQLITE_FULL: must not raise, must not lose the popped rows
        assert [n.kind for n in notices] == ["spool_error"] and "full" in notices[0].reason
        assert notices[0].events == [] and buffer.held > 0 and len(buffer) == 3010
        assert buffer.low_seq() == 1

        first = buffer.take(1000, 1 << 30)  # disk rows first, then those held in memory, each in order
        assert first is not None and ids_of(first.bodies) == [f"ev-{i:06d}" for i in range(1, 1001)]
        buffer.ack(first)
        second = buffer.take(1000, 1 << 30)
        assert second is not None and ids_of(second.bodies)[0] == "ev-001001"
        buffer.give_back(second)
        refused = buffer.take(3, 1 << 30)
        assert refused is not None
        # nowhere to keep refused events: False, and they are resolved (the dispatcher reports them)
        assert buffer.dead_letter(refused, DeliveryFailure("rejected", refused.events(), "400 nope", 400)) is False
        for _ in range(5):
            buffer.commit()  # every commit retries; still full: no second notice
        assert len(notices) == 1

        disk.free()
        buffer.intake.append((3011, body(3011)))
        with caplog.at_level(logging.WARNING, logger="openmonetize"):
            buffer.commit()
        assert buffer.held == 0 and buffer.stored == 3011 - 1003
        assert "writable again" in caplog.text
        rest = drain(buffer)
        handed_out = first.bodies + refused.bodies + rest
        assert sorted(ids_of(handed_out)) == [f"ev-{i:06d}" for i in range(1, 3012)]  # each exactly once
        assert len(buffer) == 0 and buffer.low_seq() == float("inf")
        buffer.close()
        assert spool_files(disk.root / "spool") == []


def test_an_ack_the_disk_refuses_is_retried_and_those_events_are_never_handed_out_again(tmp_path):
    notices: list[DeliveryFailure] = []
    buffer = opened(tmp_path, notices)
    buffer.intake.extend((i, body(i)) for i in range(1, 11))
    buffer.commit()
    a, b = buffer.take(5, 1 << 30), buffer.take(5, 1 << 30)
    assert a is not None and b is not None
    db = buffer._db
    assert db is not None
    db.execute("PRAGMA query_only = ON")  # every write now fails (SQLITE_READONLY), as on a failing disk
    buffer.ack(b)  # must not raise
    assert [n.kind for n in notices] == ["spool_error"]
    buffer.give_back(a)
    assert len(buffer) == 5 and buffer.low_seq() == 1
    again = buffer.take(100, 1 << 30)
    assert again is not None and ids_of(again.bodies) == [f"ev-{i:06d}" for i in range(1, 6)]
    buffer.ack(again)
    assert buffer.low_seq() == float("inf")  # acknowledged rows still on disk do not hold flush() up
    db.execute("PRAGMA query_only = OFF")
    buffer.commit()
    assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    buffer.close()
    assert spool_files(tmp_path) == []


def test_a_full_disk_under_the_client_loses_nothing_and_delivers_from_memory(tmp_path, caplog):
    failures: list[DeliveryFailure] = []
    with LocalIngestServer(api_key=KEY) as server, small_disk(tmp_path / "disk") as disk:
        om = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=disk.root / "spool",
                          on_error=failures.append, flush_interval=0.05)
        first = om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=1)
        assert om.flush(30)
        disk.fill(om._buffer._db)  # type: ignore[attr-defined]
        ids = {first} | {om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=i + 1)
                         for i in range(3000)}
        assert om.flush(30)  # delivered from memory while the disk refuses them
        assert server.event_ids == ids
        assert [f.kind for f in failures] == ["spool_error"]
        assert any(t.name == "openmonetize-dispatcher" and t.is_alive() for t in threading.enumerate())
        disk.free()
        with caplog.at_level(logging.WARNING, logger="openmonetize"):
            ids |= {om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=1)
                    for _ in range(100)}
            assert om.flush(30)
            assert om.shutdown(10)
        assert server.event_ids == ids and server.duplicates_received == 0
        assert "writable again" in caplog.text
        assert [f.kind for f in failures] == ["spool_error"]
        assert spool_files(disk.root / "spool") == []


CHILD_ON_A_FULL_DISK = """
import json, os, signal, sys, threading, time
from openmonetize import OpenMonetize
notice = threading.Event()
om = OpenMonetize(api_key={key!r}, base_url={down!r}, spool_dir={spool!r},
                  on_error=lambda f: f.kind == "spool_error" and notice.set())
om.start()
fd = os.open({filler!r}, os.O_WRONLY | os.O_CREAT)
try:
    for size in (65536, 512):
        while True:
            os.write(fd, b"\\0" * size)
except OSError:
    pass
os.close(fd)
ids = [om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=i + 1)
       for i in range(2000)]
assert notice.wait(60), "no spool_error notice"
os.unlink({filler!r})  # room again: the events held in memory go back to disk
deadline = time.monotonic() + 60
while om.stats()["spooled"] < 2000 and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps(ids), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_events_held_through_a_full_disk_are_on_disk_once_it_has_room_and_survive_kill_9(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        if not disk.mounted:
            pytest.skip("needs a real small file system (mount -t tmpfs)")
        spool = disk.root / "spool"
        code = CHILD_ON_A_FULL_DISK.format(key=KEY, down=f"http://127.0.0.1:{free_port()}", spool=str(spool),
                                           filler=str(disk.filler))
        child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                               timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stderr
        ids = set(json.loads(child.stdout))
        assert len(ids) == 2000
        with LocalIngestServer(api_key=KEY) as server:
            nxt = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool)
            nxt.start()
            assert nxt.flush(60)
            assert server.event_ids == ids
            assert nxt.shutdown(10)


# -- corrupt, truncated and foreign neighbours ---------------------------------------------------------------


def damage_a_leaf_page(path: Path) -> int:
    """Overwrite one leaf page of the events table in the middle of the file; returns how many events its
    rows held (a row is a group of events; one event in a file of the previous version)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        leaves = db.execute("SELECT pageno, ncell FROM dbstat WHERE name = 'events' AND pagetype = 'leaf'"
                            " ORDER BY pageno").fetchall()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        events_in = dict(db.execute("SELECT id, COALESCE(n, 1) FROM events"))
    pageno, cells = leaves[len(leaves) // 2]
    with path.open("r+b") as f:
        f.seek((pageno - 1) * page_size)
        row_ids = leaf_row_ids(f.read(page_size), cells)
        f.seek((pageno - 1) * page_size)
        f.write(random.Random(7).randbytes(page_size))
    return sum(events_in[row_id] for row_id in row_ids)


def leaf_row_ids(page: bytes, cells: int) -> list[int]:
    """The row ids of a table b-tree leaf page's cells (SQLite's file format: a cell pointer array after
    the 8-byte page header; each cell starts with its payload size and row id, as varints)."""
    assert page[0] == 0x0D, "not a table leaf page"

    def varint(at: int) -> tuple[int, int]:
        value = 0
        for i in range(9):
            byte = page[at + i]
            if i == 8:
                return (value << 8) | byte, at + 9
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                return value, at + i + 1
        raise AssertionError("unreachable")

    ids = []
    for cell in range(cells):
        (start,) = struct.unpack_from(">H", page, 8 + 2 * cell)
        _, after_size = varint(start)
        ids.append(varint(after_size)[0])
    return ids


def test_corrupt_and_truncated_orphans_are_quarantined_and_their_readable_rows_salvaged(tmp_path, caplog):
    spool = tmp_path / "spool"
    originals = [body(i) for i in range(3000)]
    damaged = make_orphan(spool, originals[:1500])
    lost = damage_a_leaf_page(damaged)
    truncated = make_orphan(spool, originals[1500:2500])
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) * 6 // 10])
    (spool / f"1-0badf11e{SPOOL_SUFFIX}").write_bytes(random.Random(1).randbytes(20_000))
    header_only = make_orphan(spool, [body(9999)])
    header_only.write_bytes(header_only.read_bytes()[:50])
    healthy = make_orphan(spool, originals[2500:], dead=3)

    buffer = opened(spool)
    with caplog.at_level(logging.ERROR, logger="openmonetize"):
        adopted = buffer.adopt_orphans()  # must not raise
    salvaged = drain(buffer)
    assert adopted == len(salvaged)
    assert set(salvaged) <= set(originals)
    from_damaged = [b for b in salvaged if b in originals[:1500]]
    from_truncated = [b for b in salvaged if b in originals[1500:2500]]
    assert from_damaged == [b for b in originals[:1500] if b in from_damaged]  # in order
    assert len(from_damaged) == 1500 - lost  # only the damaged page's rows are lost
    assert 0 < len(from_truncated) < 1000
    assert [b for b in salvaged if b in originals[2500:]] == originals[2500:2997]
    assert buffer.dead_letters == 3  # the healthy file's dead letters came along

    assert spool_files(spool) == [buffer.path]
    assert len(quarantined_files(spool)) == 4
    corrupt_logs = [r for r in caplog.records if r.levelno == logging.ERROR and "corrupt" in r.getMessage()]
    assert len(corrupt_logs) == 4
    assert buffer.adopt_orphans() == 0  # quarantined files are not tried again
    assert {f.state for f in inspect_spool(spool)} == {"live", "quarantined"}
    assert not healthy.exists()
    buffer.close()


def test_a_client_over_a_corrupt_orphan_constructs_tracks_and_delivers_what_was_salvaged(tmp_path, caplog):
    spool = tmp_path / "spool"
    originals = [body(i, "cust_dead") for i in range(1200)]
    damaged = make_orphan(spool, originals)
    lost = damage_a_leaf_page(damaged)
    (spool / f"1-0badf11e{SPOOL_SUFFIX}").write_bytes(random.Random(2).randbytes(8192))
    failures: list[DeliveryFailure] = []
    with LocalIngestServer(api_key=KEY) as server, caplog.at_level(logging.ERROR, logger="openmonetize"):
        om = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool, on_error=failures.append)
        mine = {om.track_custom_event(customer_id="c", feature_id="f", unit_type="pages", quantity=1)
                for _ in range(10)}
        assert om.flush(60)
        assert om.shutdown(10)
        salvaged = server.event_ids - mine
        assert mine <= server.event_ids
        assert len(salvaged) == 1200 - lost and salvaged <= set(ids_of(originals))
    assert failures == []
    assert len(quarantined_files(spool)) == 2 and spool_files(spool) == []
    assert "corrupt" in caplog.text


def test_a_large_orphan_is_adopted_in_chunks_with_tracked_events_committed_between_them(tmp_path):
    spool = tmp_path / "spool"
    make_orphan(spool, [body(i, "old") for i in range(100_000)])
    buffer = opened(spool)
    assert buffer.stored == 0 and len(spool_files(spool)) == 2  # open() adopts nothing
    buffer.intake.extend((i, body(i, "new")) for i in range(1, 6))  # tracked while the adoption runs
    assert buffer.adopt_orphans() == 100_000
    db = buffer._db
    assert db is not None
    new_ids = [row_id for row_id, b in db.execute("SELECT id, body FROM events") if b"new" in b]
    (last_adopted,) = db.execute("SELECT MAX(id) FROM events WHERE CAST(body AS TEXT) LIKE '%\"old\"%'").fetchone()
    assert new_ids and max(new_ids) < last_adopted  # they reached the disk before the adoption ended
    assert buffer.stored == 100_005 and spool_files(spool) == [buffer.path]
    buffer.close(delete_if_empty=False)


AS_ANOTHER_USER = """
import json, logging, sys, threading
from openmonetize import OpenMonetize
from openmonetize.lib.buffers import SpoolBuffer, SpoolError
warnings = []
class Collect(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("openmonetize").addHandler(Collect(logging.WARNING))
out = {{}}
for name, path in {paths!r}.items():
    before = threading.active_count()
    errors = []
    for _ in range(200):
        try:
            OpenMonetize(api_key="k", base_url="http://127.0.0.1:9", spool_dir=path)
        except SpoolError as exc:
            errors.append(str(exc))
        except Exception as exc:
            errors.append("not a SpoolError: " + type(exc).__name__ + ": " + str(exc))
    out[name] = {{"errors": sorted(set(errors)), "count": len(errors), "threads": threading.active_count() - before}}
buffer = SpoolBuffer({shared!r})
buffer.open()
out["adopted"] = [buffer.adopt_orphans(), buffer.adopt_orphans()]
out["warnings"] = warnings
buffer.close()
print(json.dumps(out))
"""


def python_for(uid: int) -> tuple[str, dict[str, str]] | None:
    """A Python that `uid` may run, with this checkout and the venv's packages on its path (this venv's
    interpreter may live under a home directory that other users cannot enter)."""
    env = {"PATH": os.environ["PATH"], "PYTHONNOUSERSITE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])}
    for candidate in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([candidate, "-c", "import openmonetize.lib.buffers"], user=uid, env=env, cwd="/",
                              capture_output=True, timeout=60).returncode == 0:
                return candidate, env
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_directories_and_files_of_another_user(tmp_path):
    python = python_for(65534)
    if python is None:
        pytest.skip("no Python that uid 65534 may run")
    base = Path(tempfile.mkdtemp(prefix="om-spool-users-"))
    try:
        base.chmod(0o755)
        unwritable = base / "unwritable"
        unwritable.mkdir(mode=0o755)
        foreign = base / "foreign"
        foreign.mkdir(mode=0o700)
        shared = base / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        orphan = make_orphan(shared, [body(i) for i in range(20)])  # root's, mode 0600, and its lock file
        orphan.chmod(0o600)
        paths = {"unwritable": str(unwritable), "foreign": str(foreign / "spool")}
        code = AS_ANOTHER_USER.format(paths=paths, shared=str(shared))
        result = subprocess.run([python[0], "-c", textwrap.dedent(code)], capture_output=True, text=True,
                                user=65534, group=65534, cwd=base, timeout=120, env=python[1])
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        for name, path in paths.items():
            assert out[name]["count"] == 200 and out[name]["threads"] == 0, out
            (message,) = out[name]["errors"]
            assert path in message and "permission denied" in message, message
        assert out["adopted"] == [0, 0]
        assert len([w for w in out["warnings"] if orphan.name in w]) == 1, out["warnings"]  # one warning, once
        assert orphan.exists() and orphan.stat().st_uid == 0  # neither adopted nor deleted
        assert os.listdir(unwritable) == []
    finally:
        shutil.rmtree(base)


def test_a_path_that_is_a_file_or_a_read_only_file_system_raises_spool_error_with_no_thread_left(tmp_path):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    with small_disk(tmp_path / "ro", "1m", ",ro") as disk:
        cases = [a_file, a_file / "spool"] + ([disk.root / "spool"] if disk.mounted else [])
        before = threading.active_count()
        for path in cases:
            for _ in range(200):
                with pytest.raises(SpoolError) as caught:
                    OpenMonetize(api_key=KEY, base_url="http://127.0.0.1:9", spool_dir=path)
            assert str(path) in str(caught.value)
            assert isinstance(caught.value, OSError) and caught.value.directory == str(path)
        assert threading.active_count() == before
        if disk.mounted:
            assert "read-only file system" in str(caught.value)
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir", "ro"]


# -- dead letters ---------------------------------------------------------------------------------------------


def test_dead_letters_keep_status_reason_and_detail_survive_close_and_move_with_adoption(tmp_path):
    spool = tmp_path / "spool"
    buffer = opened(spool)
    buffer.intake.extend((i, body(i)) for i in range(1, 6))
    buffer.commit()
    batch = buffer.take(5, 1 << 30)
    assert batch is not None
    refused = batch.subset([1, 3])
    failure = DeliveryFailure("rejected", refused.events(), "FEATURE_NOT_FOUND: feature pdf", status=202,
                              details=[{"index": 3, "event_id": "ev-000004", "code": "FEATURE_NOT_FOUND"}])
    assert buffer.dead_letter(refused, failure) is True
    buffer.ack(batch.subset([0, 2, 4]))  # the dispatcher acks the others of the batch
    buffer.intake.append((6, body(6)))
    buffer.commit()
    unconfirmed = buffer.take(1, 1 << 30)
    assert unconfirmed is not None
    assert buffer.dead_letter(unconfirmed, DeliveryFailure("unconfirmed", unconfirmed.events(),
                                                           "answered 200 with an empty body 3 times"))
    assert buffer.dead_letters == 3 and len(buffer) == 0 and buffer.low_seq() == float("inf")
    buffer.close()
    assert buffer.path.exists()  # only dead letters: kept, not deleted

    (state,) = inspect_spool(spool)
    assert (state.state, state.events, state.dead_letters) == ("orphaned", 0, 3)
    letters = list(read_dead_letters(spool))
    assert [(d.event_id, d.kind, d.status) for d in letters] == [
        ("ev-000002", "rejected", 202), ("ev-000004", "rejected", 202), ("ev-000006", "unconfirmed", None)]
    assert letters[1].details == [{"index": 3, "event_id": "ev-000004", "code": "FEATURE_NOT_FOUND"}]
    assert letters[0].details == [] and letters[0].reason.startswith("FEATURE_NOT_FOUND")
    assert letters[0].dead_at.endswith("Z") and letters[0].customer_id == "cust_1"
    assert letters[0].body == body(2)

    nxt = opened(spool)
    assert nxt.adopt_orphans() == 0 and nxt.dead_letters == 3  # moved into the next process's file
    assert not buffer.path.exists() and nxt.take(10, 1 << 30) is None
    nxt.close()
    assert [d.event_id for d in read_dead_letters(spool)] == ["ev-000002", "ev-000004", "ev-000006"]
    assert [d.path for d in read_dead_letters(spool)] == [nxt.path] * 3
