"""One deadline for a whole HTTP request, and what its failures are reported as.

urllib3's ``timeout`` bounds each socket operation (connect, every ``recv``), not the request: a server that
sends one byte every half second never times out, and a background sender waiting on it is lost. Here a
single watchdog thread holds the deadline of every request made with a number as ``_request_timeout``; at
a request's deadline it ``shutdown(SHUT_RDWR)``s the socket of the connection serving it, so whatever
read or write is blocked wakes up at once, and the failure is reported as ``ApiTimeoutError``.

How the socket is known before the first byte of the answer arrives: the generated REST client's pool
manager gets connection pool and connection classes of our own (urllib3's ``pool_classes_by_scheme`` and
``ConnectionCls`` hooks, :func:`install`). A connection claims itself for the request of the current
thread when it opens its socket and when it starts a request; a pool releases the claim when the
connection comes back to it, so a deadline never cuts a connection that has moved on to another request.

- The connect timeout is capped to what is left of the deadline (urllib3's ``Timeout(total=...)`` only
  caps it per attempt).
- The deadline covers the whole call: urllib3's own retries and redirects, when the configuration allows
  them, happen inside it. A ``Retry-After`` pause urllib3 takes is not interrupted; the attempt after it
  fails at once.
- Name resolution (``getaddrinfo``) has no socket to cut; it is bounded only by the system resolver.
- A tuple ``(connect, read)`` keeps urllib3's meaning (per-operation limits, no deadline for the whole
  request); its failures are reported the same way.
- Nothing starts at import. The thread starts with the first deadline, and again, lazily, in a child
  after ``os.fork()`` (threads do not survive a fork).

The generated ``rest.py`` calls :func:`install`, :func:`begin`, :meth:`RequestScope.failure` and
:func:`read_body`; everything else here is internal.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import http.client
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.util import parse_url

from openmonetize.exceptions import ApiConnectionError, ApiTimeoutError

__all__ = ["TRANSPORT_ERRORS", "Deadline", "RequestScope", "Watchdog", "begin", "install", "read_body"]

#: What a request can fail with below the HTTP answer; `rest.py` maps all of them.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException)

# How soon the watchdog tries again when the socket it must cut is not there yet (a TLS handshake in
# progress: the plain socket is already detached, the TLS one not yet attached to the connection).
_RETRY_CUT = 0.01
_MAX_RETRIES = 500
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})
_MAX_CAUSE = 300


class _Target(Protocol):
    """A connection the watchdog can cut (our urllib3 connection classes, or a test's stand-in)."""

    sock: socket.socket | None
    _om_deadline: Deadline | None


class Deadline:
    """The deadline of one request. Mutable state is guarded by the lock of the watchdog that made it."""

    __slots__ = ("_seq", "at", "cut", "expired", "finished", "retries", "seconds", "target")

    def __init__(self, seconds: float, at: float, seq: int) -> None:
        self.seconds = seconds
        self.at = at
        self._seq = seq
        self.target: _Target | None = None
        self.expired = False  # the deadline passed before the request finished
        self.cut = False  # ... and the watchdog shut the connection's socket down
        self.finished = False
        self.retries = 0

    def __lt__(self, other: Deadline) -> bool:
        return (self.at, self._seq) < (other.at, other._seq)


class Watchdog:
    """Cuts the connection of each request still running at its deadline.

    One thread for every request of the process: it sleeps until the earliest deadline. ``clock`` and
    ``start_thread=False`` let tests drive :meth:`fire_due` by hand.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, start_thread: bool = True) -> None:
        self._clock = clock
        self._start_thread = start_thread
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[Deadline] = []
        self._finished_in_heap = 0
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        return self._clock()

    def arm(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now."""
        with self._cond:
            deadline = Deadline(seconds, self._clock() + seconds, next(self._seq))
            heapq.heappush(self._heap, deadline)
            if self._heap[0] is deadline:
                self._cond.notify()
            if self._thread is None and self._start_thread:
                self._thread = threading.Thread(target=self._run, name="openmonetize-http-deadline", daemon=True)
                self._thread.start()
        return deadline

    def claim(self, target: _Target, deadline: Deadline | None) -> None:
        """``target`` now serves the request of ``deadline`` (None: a request without one)."""
        with self._cond:
            previous = target._om_deadline
            if previous is not None and previous.target is target:
                previous.target = None
            target._om_deadline = None
            if deadline is None or deadline.finished:
                return
            target._om_deadline = deadline
            deadline.target = target
            if deadline.expired:  # the deadline passed while the connection was opening
                self._cut(deadline)

    def release(self, target: _Target) -> None:
        """``target`` is back in its pool: no deadline may cut it any more."""
        with self._cond:
            deadline = target._om_deadline
            if deadline is not None and deadline.target is target:
                deadline.target = None
            target._om_deadline = None

    def finish(self, deadline: Deadline) -> None:
        """The request is over (answered or failed); its deadline no longer matters."""
        with self._cond:
            if deadline.finished:
                return
            deadline.finished = True
            target = deadline.target
            if target is not None and target._om_deadline is deadline:
                target._om_deadline = None
            deadline.target = None
            # finished deadlines leave the heap when due; rebuild it when they are most of it
            self._finished_in_heap += 1
            if self._finished_in_heap > 64 and self._finished_in_heap * 2 > len(self._heap):
                self._heap = [d for d in self._heap if not d.finished]
                heapq.heapify(self._heap)
                self._finished_in_heap = 0

    def fire_due(self) -> float | None:
        """Expire (and cut) every deadline that is due; seconds until the next one, None if none is left."""
        with self._cond:
            return self._fire_due()

    def pending(self) -> int:
        """Deadlines of requests still running (for tests and diagnostics)."""
        with self._cond:
            return sum(1 for d in self._heap if not d.finished)

    def _fire_due(self) -> float | None:
        now = self._clock()
        while self._heap:
            deadline = self._heap[0]
            if deadline.finished:
                heapq.heappop(self._heap)
                self._finished_in_heap = max(0, self._finished_in_heap - 1)
                continue
            if deadline.at > now:
                return deadline.at - now
            heapq.heappop(self._heap)
            deadline.expired = True
            if self._cut(deadline) is None and deadline.retries < _MAX_RETRIES:
                deadline.retries += 1
                deadline.at = now + _RETRY_CUT  # its socket is being wrapped in TLS: try again shortly
                heapq.heappush(self._heap, deadline)
        return None

    def _cut(self, deadline: Deadline) -> bool | None:
        """Shut the socket of the deadline's connection down.

        False: there is nothing to cut (no connection, or one with no socket: opening a socket claims the
        connection again and is refused then). None: the socket cannot be reached right now (detached
        from its plain socket object while a TLS handshake wraps it).
        """
        target = deadline.target
        sock: Any = target.sock if target is not None else None
        if sock is None:
            return False
        if not isinstance(sock, socket.socket):  # e.g. urllib3.contrib.pyopenssl's WrappedSocket
            sock = getattr(sock, "socket", None)
            if not isinstance(sock, socket.socket):
                return False
        if sock.fileno() == -1:
            return None
        # The plain socket's shutdown, also for a TLS socket (SSLSocket.shutdown would drop the TLS state
        # under the thread that is reading). OSError: already closed by the peer or the request's thread.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        deadline.cut = True
        return True

    def _run(self) -> None:
        with self._cond:
            while True:
                self._cond.wait(self._fire_due())


class _Process:
    """The watchdog of this process; replaced in a child after fork (the thread does not survive it)."""

    lock = threading.Lock()
    watchdog: Watchdog | None = None
    pid = os.getpid()


def _forget_after_fork() -> None:
    _Process.lock = threading.Lock()  # the parent's may have been held by a thread that is gone
    _Process.watchdog = None
    _Process.pid = os.getpid()


os.register_at_fork(after_in_child=_forget_after_fork)


def watchdog() -> Watchdog:
    """The process's watchdog (created on first use; its thread starts with the first deadline)."""
    current = _Process.watchdog
    if current is not None and _Process.pid == os.getpid():
        return current
    with _Process.lock:
        if _Process.watchdog is None or _Process.pid != os.getpid():
            _Process.watchdog, _Process.pid = Watchdog(), os.getpid()
        return _Process.watchdog


# ---------------------------------------------------------------------------- the current request

_current = threading.local()


def _current_deadline() -> Deadline | None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    return deadline


class RequestScope:
    """One call of the REST client: its host (for messages), its timeout, its deadline if it has one."""

    __slots__ = ("_secrets", "deadline", "host", "timeout")

    def __init__(self, host: str, timeout: Any, deadline: Deadline | None, secrets: Iterable[str] = ()) -> None:
        self.host = host
        self.timeout = timeout
        self.deadline = deadline
        self._secrets = tuple(s for s in secrets if len(s) >= 4)

    def finish(self) -> None:
        if self.deadline is not None:
            watchdog().finish(self.deadline)
            if _current_deadline() is self.deadline:
                _current.deadline = None

    @property
    def cut(self) -> bool:
        """The watchdog shut the connection down: whatever was received may be incomplete."""
        return self.deadline is not None and self.deadline.cut

    def failure(self, exc: BaseException) -> ApiConnectionError:
        """The openmonetize exception for a transport failure of this request (the caller chains ``exc``)."""
        expired = self.deadline is not None and self.deadline.expired
        self.finish()
        root = _root_cause(exc)
        cause = self._redact(_describe(root))
        if expired or self.cut:
            return ApiTimeoutError(
                f"no complete answer from {self.host} within the {_seconds(self.timeout)} request deadline",
                host=self.host, timeout=self.timeout)
        if _is_timeout(root):
            limit = f" (timeout {_seconds(self.timeout)} per socket operation)" if self.timeout is not None else ""
            return ApiTimeoutError(f"no complete answer from {self.host}: {cause}{limit}", host=self.host,
                                   timeout=self.timeout)
        return ApiConnectionError(f"could not complete the request to {self.host}: {cause}", host=self.host)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


def begin(url: str, timeout: Any, headers: Mapping[str, Any] | None = None) -> RequestScope:
    """Start one request to ``url``: a deadline when ``timeout`` is a number (seconds), none otherwise.

    ``headers`` are the request's: the values of credential headers are kept out of any failure text.
    """
    secrets = [str(v) for k, v in (headers or {}).items() if str(k).lower() in _CREDENTIAL_HEADERS and v]
    secrets += [part for s in list(secrets) for part in s.split(" ", 1)[1:]]  # "Bearer KEY": KEY alone too
    deadline = None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        deadline = watchdog().arm(float(timeout))
    _current.deadline = deadline
    return RequestScope(_origin(url), timeout, deadline, secrets)


def read_body(response: urllib3.BaseHTTPResponse, scope: RequestScope | None) -> bytes:
    """The whole body of ``response``, read within the request's deadline; transport failures mapped."""
    if scope is None:
        return response.data
    try:
        data = response.data
    except TRANSPORT_ERRORS as exc:
        raise scope.failure(exc) from exc
    if scope.cut:  # an answer delimited by the connection's end looks complete when it was cut
        error = scope.failure(TimeoutError("the request deadline passed"))
        raise error
    scope.finish()
    return data


# ---------------------------------------------------------------------------- urllib3 classes


class _DeadlineConnectionMixin:
    """Mixed into a urllib3 connection class: claims the connection for the current request's deadline."""

    _om_deadline: Deadline | None = None
    sock: socket.socket | None
    timeout: Any

    def _new_conn(self) -> socket.socket:
        deadline = _current_deadline()
        if deadline is not None and not deadline.finished:
            left = deadline.at - watchdog().now()
            if left <= 0:
                raise ConnectTimeoutError(self, f"the request deadline ({deadline.seconds:g} s) passed")
            if self.timeout is None or not isinstance(self.timeout, (int, float)) or self.timeout > left:
                self.timeout = left
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        self.sock = sock  # known to the watchdog before any TLS handshake or tunnel
        watchdog().claim(self, deadline)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        watchdog().claim(self, _current_deadline())
        super().request(*args, **kwargs)  # type: ignore[misc]


class _DeadlinePoolMixin:
    """Mixed into a urllib3 pool class: a connection back in the pool is free of any deadline."""

    def _put_conn(self, conn: Any) -> None:
        if conn is not None and getattr(conn, "_om_deadline", None) is not None:
            watchdog().release(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _Classes:
    lock = threading.Lock()
    pools: ClassVar[dict[type[HTTPConnectionPool], type[HTTPConnectionPool]]] = {}


def _deadline_pool(pool_cls: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    if issubclass(pool_cls, _DeadlinePoolMixin):
        return pool_cls
    with _Classes.lock:
        made = _Classes.pools.get(pool_cls)
        if made is None:
            conn_cls: type[HTTPConnection] = pool_cls.ConnectionCls  # type: ignore[assignment]
            deadline_conn = type(f"Deadline{conn_cls.__name__}", (_DeadlineConnectionMixin, conn_cls), {})
            made = type(f"Deadline{pool_cls.__name__}", (_DeadlinePoolMixin, pool_cls),
                        {"ConnectionCls": deadline_conn})
            _Classes.pools[pool_cls] = made
        return made


def install(pool_manager: urllib3.PoolManager) -> None:
    """Give ``pool_manager`` (any urllib3 PoolManager, ProxyManager or SOCKSProxyManager) our pool classes."""
    pool_manager.pool_classes_by_scheme = {
        scheme: _deadline_pool(cls) for scheme, cls in pool_manager.pool_classes_by_scheme.items()
    }


# ---------------------------------------------------------------------------- messages


@functools.lru_cache(maxsize=64)
def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: never its path, query or credentials. Cached: every request asks for
    it (urllib3's ``parse_url`` costs a few microseconds), and a client sends to one host."""
    try:
        parsed = parse_url(url)
    except Exception:
        return "the configured host"
    scheme = parsed.scheme or "http"
    port = parsed.port or (443 if scheme == "https" else 80)
    return f"{scheme}://{parsed.host}:{port}"


def _root_cause(exc: BaseException) -> BaseException:
    """The OS or protocol error under urllib3's wrappers (MaxRetryError, ProtocolError, ...)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner: object = None
        if isinstance(exc, MaxRetryError):
            inner = exc.reason
        elif isinstance(exc, ProxyError):
            inner = exc.original_error
        elif isinstance(exc, (ProtocolError, SSLError)):
            inner = next((a for a in exc.args if isinstance(a, BaseException)), None)
        if inner is None and isinstance(exc, NewConnectionError):
            inner = exc.__cause__
        if not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, NewConnectionError):  # "<HTTPConnection object at 0x...>: Failed to ..."
        text = text.split(": ", 1)[-1]
    text = " ".join(text.split())
    if len(text) > _MAX_CAUSE:
        text = text[: _MAX_CAUSE - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, NewConnectionError):  # urllib3 makes it a ConnectTimeoutError subclass
        return isinstance(exc.__cause__, TimeoutError)
    return isinstance(exc, (Urllib3TimeoutError, TimeoutError))


def _seconds(timeout: Any) -> str:
    if isinstance(timeout, tuple) and len(timeout) == 2:
        return f"{timeout[0]:g} s connect / {timeout[1]:g} s read"
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        return f"{timeout:g} s"
    return "configured"
