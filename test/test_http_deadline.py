"""The request-deadline watchdog without a thread: an injected clock and `fire_due()` called by hand."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from openmonetize.lib.http_deadline import Deadline, Watchdog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Connection:
    """What the watchdog sees of a urllib3 connection: its socket and the deadline that claimed it."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self._om_deadline: Deadline | None = None


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def was_cut(sock: socket.socket) -> bool:
    """A socket shut down for reading reads end-of-file at once; a live one has nothing to read."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def watchdog(clock: Clock) -> Watchdog:
    return Watchdog(clock, start_thread=False)


def test_a_connection_is_cut_at_its_deadline_not_before(watchdog, clock, pair):
    conn = Connection(pair[0])
    deadline = watchdog.arm(2.0)
    watchdog.claim(conn, deadline)

    clock.now += 1.5
    assert watchdog.fire_due() == pytest.approx(0.5)  # what the thread would sleep
    assert not was_cut(pair[0]) and not deadline.expired

    clock.now += 0.5
    assert watchdog.fire_due() is None
    assert deadline.expired and deadline.cut
    assert was_cut(pair[0])


def test_a_finished_request_is_never_cut(watchdog, clock, pair):
    conn = Connection(pair[0])
    deadline = watchdog.arm(1.0)
    watchdog.claim(conn, deadline)
    watchdog.finish(deadline)

    clock.now += 5
    watchdog.fire_due()
    assert not deadline.cut and not was_cut(pair[0])
    assert watchdog.pending() == 0


def test_a_connection_back_in_its_pool_or_serving_another_request_is_not_cut(watchdog, clock, pair):
    conn = Connection(pair[0])
    first = watchdog.arm(1.0)
    watchdog.claim(conn, first)
    watchdog.release(conn)  # the answer was read: the pool has the connection again

    clock.now += 2
    watchdog.fire_due()
    assert first.expired and not first.cut and not was_cut(pair[0])

    second = watchdog.arm(1.0)
    third = watchdog.arm(10.0)
    watchdog.claim(conn, second)
    watchdog.claim(conn, third)  # the next request on the same connection (keep-alive)
    clock.now += 2
    watchdog.fire_due()
    assert second.expired and not second.cut and not was_cut(pair[0])
    watchdog.claim(conn, None)  # a request without a deadline takes the connection
    clock.now += 20
    watchdog.fire_due()
    assert not third.cut and not was_cut(pair[0])


def test_a_connection_opened_after_the_deadline_is_cut_when_it_claims(watchdog, clock, pair):
    deadline = watchdog.arm(1.0)
    clock.now += 1
    watchdog.fire_due()  # nothing to cut yet
    assert deadline.expired and not deadline.cut

    watchdog.claim(Connection(pair[0]), deadline)
    assert deadline.cut and was_cut(pair[0])


def test_a_socket_being_wrapped_in_tls_is_cut_once_it_is_attached(watchdog, clock, pair):
    detached = socket.socket()
    os.close(detached.detach())  # what the plain socket looks like while SSLContext.wrap_socket owns its fd
    conn = Connection(detached)
    deadline = watchdog.arm(1.0)
    watchdog.claim(conn, deadline)

    clock.now += 1
    retry = watchdog.fire_due()
    assert retry is not None and retry < 0.1 and not deadline.cut

    conn.sock = pair[0]  # the TLS socket is attached
    clock.now += retry
    watchdog.fire_due()
    assert deadline.cut and was_cut(pair[0])


def test_a_closed_connection_is_not_retried(watchdog, clock):
    conn = Connection(None)
    deadline = watchdog.arm(1.0)
    watchdog.claim(conn, deadline)
    clock.now += 1
    assert watchdog.fire_due() is None  # nothing left to wait for
    assert deadline.expired and not deadline.cut


def test_deadlines_fire_in_order_and_finished_ones_are_dropped(watchdog, clock):
    deadlines = [watchdog.arm(float(seconds)) for seconds in (3, 1, 2)]
    for deadline in deadlines[:1]:
        watchdog.finish(deadline)
    clock.now += 1
    assert watchdog.fire_due() == pytest.approx(1.0)
    assert [d.expired for d in deadlines] == [False, True, False]
    clock.now += 5
    watchdog.fire_due()
    assert [d.expired for d in deadlines] == [False, True, True]
    assert watchdog.pending() == 0


def test_many_finished_deadlines_do_not_accumulate(watchdog):
    for _ in range(1000):
        watchdog.finish(watchdog.arm(60.0))
    assert len(watchdog._heap) < 200


def test_nothing_starts_at_import_and_the_thread_starts_with_the_first_deadline():
    script = """
import threading
import openmonetize, openmonetize.rest, openmonetize.api_client, openmonetize.lib.http_deadline as d
from openmonetize import ApiClient, Configuration
ApiClient(Configuration(host="http://127.0.0.1:1"))
names = lambda: [t.name for t in threading.enumerate()]
assert "openmonetize-http-deadline" not in names(), names()
d.begin("http://127.0.0.1:1", 5.0).finish()
assert "openmonetize-http-deadline" in names(), names()
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
