"""Processes that end without `atexit`: multiprocessing and billiard children (`os._exit`), and SIGTERM.

Each case runs a script in a subprocess against a real LocalIngestServer over loopback and checks that the
server received exactly the events the script tracked, once. Scripts that are signalled print their event ids
first; the test signals only after reading them.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmonetize import OpenMonetize
from openmonetize.testing import LocalIngestServer

KEY = "sk_process_exit_test_key"

# Scripts that must prove a drain use flush_interval=60 and no full batch: nothing goes out until a drain
PRELUDE = """
import json, os, signal, sys, threading
from openmonetize import OpenMonetize

def track(om, n, customer):
    return [om.track_custom_event(customer_id=customer, feature_id="f", unit_type="calls", quantity=1)
            for _ in range(n)]

def idle():
    threading.Event().wait(120)  # until signalled
"""


@pytest.fixture
def server() -> Iterator[LocalIngestServer]:
    with LocalIngestServer(api_key=KEY) as srv:
        yield srv


def script(tmp_path: Path, code: str) -> Path:
    """A file, not `-c`: the spawn and forkserver start methods re-import the main module by path."""
    path = tmp_path / "script.py"
    path.write_text(PRELUDE + textwrap.dedent(code))
    return path


def run(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(script(tmp_path, code))], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def signalled(tmp_path: Path, code: str, signum: int) -> tuple[list[str], int, str]:
    """Start the script, read the ids it prints on its first line, send `signum`, wait for it to end.

    Returns the ids, the exit status and stderr."""
    # a child still running 50 s later writes where each of its threads waits to stderr, which a failure shows
    watch = "import faulthandler\nfaulthandler.dump_traceback_later(50)\n"
    proc = subprocess.Popen([sys.executable, str(script(tmp_path, watch + textwrap.dedent(code)))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=60)[1]
        proc.send_signal(signum)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"still running 60 s after the signal; its stderr:\n{proc.communicate()[1]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return json.loads(line), proc.returncode, stderr


def assert_received_exactly(server: LocalIngestServer, ids: list[str]) -> None:
    assert len(set(ids)) == len(ids)
    assert server.event_ids == set(ids)
    assert len(server.events) == len(ids) and server.duplicates_received == 0


@pytest.mark.parametrize("form", ["close_join", "with_block", "maxtasksperchild"])
def test_fork_pool_workers_deliver_their_events(tmp_path, server, form):
    # with_block: Pool.__exit__ calls terminate(), which SIGTERMs the idle workers. 230 events a task (never a
    # multiple of batch_size per worker) and flush_interval=60: only full batches would go out by themselves.
    result = run(tmp_path, f"""
        import multiprocessing
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, flush_interval=60)

        def work(n):
            return track(om, 230, f"task_{{n}}")

        def collect(pool):
            return [i for chunk in pool.map(work, range(16), chunksize=1) for i in chunk]

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            if {form!r} == "with_block":
                with ctx.Pool(4) as pool:
                    ids = collect(pool)
            else:
                pool = ctx.Pool(4, maxtasksperchild=1 if {form!r} == "maxtasksperchild" else None)
                ids = collect(pool)
                pool.close()
                pool.join()
            print(json.dumps(ids))
    """)
    assert_received_exactly(server, json.loads(result.stdout))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_multiprocessing_process_delivers_its_events(tmp_path, server, method):
    # spawn: the child builds its own client when it re-imports this module, and ends with sys.exit (atexit runs);
    # fork and forkserver children end with os._exit
    result = run(tmp_path, f"""
        import multiprocessing
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r})

        def work(conn):
            conn.send(track(om, 500, "child"))
            conn.close()

        if __name__ == "__main__":
            ctx = multiprocessing.get_context({method!r})
            reader, writer = ctx.Pipe(duplex=False)
            child = ctx.Process(target=work, args=(writer,))
            child.start()
            ids = reader.recv()
            child.join()
            assert child.exitcode == 0, child.exitcode
            print(json.dumps(ids))
    """)
    assert_received_exactly(server, json.loads(result.stdout))


def test_billiard_pool_workers_deliver_their_events(tmp_path, server):
    # billiard's workers end in Worker._do_exit with os._exit, before any finalizer runs. It sleeps 1 s first,
    # long enough for the default flush_interval to send by luck: 60 takes luck out.
    pytest.importorskip("billiard")
    result = run(tmp_path, f"""
        import billiard
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, flush_interval=60)

        def work(n):
            return track(om, 230, f"task_{{n}}")

        if __name__ == "__main__":
            pool = billiard.Pool(4)
            ids = [i for chunk in pool.map(work, range(16), chunksize=1) for i in chunk]
            pool.close()
            pool.join()
            print(json.dumps(ids))
    """)
    assert_received_exactly(server, json.loads(result.stdout))


def test_sigterm_at_the_default_action_delivers_everything_then_dies_of_sigterm(tmp_path, server):
    ids, status, stderr = signalled(tmp_path, f"""
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, flush_interval=60)
        print(json.dumps(track(om, 500, "c")), flush=True)
        idle()
    """, signal.SIGTERM)
    assert status == -signal.SIGTERM, stderr
    assert_received_exactly(server, ids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_with_a_spool_and_the_service_down_leaves_every_event_in_the_spool(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    down = f"http://127.0.0.1:{free_port()}"
    # commit interval 60: without the handler the events would still be in memory when SIGTERM arrives
    ids, status, stderr = signalled(tmp_path, f"""
        om = OpenMonetize(api_key={KEY!r}, base_url={down!r}, spool_dir={str(spool)!r}, flush_interval=60,
                          spool_commit_interval=60, shutdown_timeout=1)
        print(json.dumps(track(om, 500, "c")), flush=True)
        idle()
    """, signal.SIGTERM)
    assert status == -signal.SIGTERM, stderr
    with LocalIngestServer(api_key=KEY) as server:
        nxt = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool)
        mine = nxt.track_custom_event(customer_id="next", feature_id="f", unit_type="calls", quantity=1)
        assert nxt.flush(60)
        assert_received_exactly(server, [*ids, mine])
        assert nxt.shutdown(10)


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigterm_with_the_programs_own_handler_is_left_to_it(tmp_path, server, when):
    before = "signal.signal(signal.SIGTERM, mine)" if when == "before" else ""
    after = "" if when == "before" else "signal.signal(signal.SIGTERM, mine)"
    ids, status, stderr = signalled(tmp_path, f"""
        def mine(signum, frame):
            os.write(2, b"program's handler ran\\n")
            sys.exit(3)  # a normal exit: atexit delivers

        {before}
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, flush_interval=60)
        {after}
        assert signal.getsignal(signal.SIGTERM) is mine
        print(json.dumps(track(om, 500, "c")), flush=True)
        idle()
    """, signal.SIGTERM)
    assert status == 3  # not -SIGTERM: ours neither ran nor was chained
    assert stderr.count("program's handler ran") == 1
    assert_received_exactly(server, ids)


def test_sigterm_while_the_main_thread_holds_the_clients_lock_still_delivers_and_dies(tmp_path, server):
    # `_lock` stands for any lock of the client that the interrupted main thread may hold: the handler must
    # neither wait for it forever nor give up delivering
    ids, status, stderr = signalled(tmp_path, f"""
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, flush_interval=60, shutdown_timeout=30)
        ids = track(om, 500, "c")
        om._lock.acquire()
        print(json.dumps(ids), flush=True)
        idle()
    """, signal.SIGTERM)
    assert status == -signal.SIGTERM, stderr
    assert_received_exactly(server, ids)


def test_a_forked_child_inherits_the_sigterm_handler_and_drains_only_its_own_events(tmp_path, server):
    result = run(tmp_path, f"""
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, flush_interval=60)
        parent_ids = track(om, 300, "parent")  # still queued in the parent across the fork
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(reader)
            default_before = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # until this child delivers
            ids = track(om, 400, "child")
            taken = signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            report = {{"ids": ids, "default_before": default_before, "taken": taken}}
            os.write(writer, (json.dumps(report) + "\\n").encode())
            os.close(writer)
            idle()
            os._exit(0)
        os.close(writer)
        with os.fdopen(reader) as pipe:
            child = json.loads(pipe.readline())
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({{"parent": parent_ids, **child, "status": os.waitstatus_to_exitcode(status)}}))
    """)
    out = json.loads(result.stdout)
    out["child"] = out.pop("ids")
    assert out["default_before"] and out["taken"]
    assert out["status"] == -signal.SIGTERM
    assert_received_exactly(server, out["parent"] + out["child"])  # the parent's at its exit, by atexit
    assert {e["customer_id"] for e in server.events if e["event_id"] in set(out["child"])} == {"child"}


def test_a_sigterm_that_lands_on_another_thread_while_the_main_thread_blocks_is_still_handled(tmp_path, server):
    # The C handler runs on the program's helper thread; the main thread, blocked in an untimed lock acquire,
    # gets no EINTR and would never run the Python handler: the watchdog must wake it.
    result = subprocess.run([sys.executable, str(script(tmp_path, f"""
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, flush_interval=60)
        print(json.dumps(track(om, 500, "c")), flush=True)
        main = threading.main_thread().native_id

        def main_is_blocked():
            with open(f"/proc/self/task/{{main}}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "S"

        def helper():
            seen = 0
            for _ in range(10_000):  # the main thread sleeping twice in a row, the GIL free in between
                seen = seen + 1 if main_is_blocked() else 0
                if seen == 2:
                    break
                threading.Event().wait(0.001)
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
            idle()

        gate = threading.Lock()
        gate.acquire()
        threading.Thread(target=helper, daemon=True).start()
        gate.acquire()  # forever
    """))], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert_received_exactly(server, json.loads(result.stdout))


def test_sigint_raises_keyboardinterrupt_and_atexit_delivers(tmp_path, server):
    # not new behaviour: this pins what docs/guides/delivery.md says about Ctrl-C. Python's default handler is
    # set explicitly: a child inherits an ignored SIGINT, and a test run started in the background by a
    # non-interactive shell (`pytest &`, some CI runners) has SIGINT ignored, where Python installs none
    ids, status, stderr = signalled(tmp_path, f"""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        om = OpenMonetize(api_key={KEY!r}, base_url={server.url!r}, flush_interval=60)
        print(json.dumps(track(om, 500, "c")), flush=True)
        idle()
    """, signal.SIGINT)
    assert status == -signal.SIGINT, stderr
    assert_received_exactly(server, ids)
