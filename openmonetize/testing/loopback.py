"""What the local servers (ingest, fake LLM provider) share: a threaded HTTP/1.1 server on loopback, run
in a daemon thread, that can close its idle keep-alive connections when it stops (else `stop()` would
wait for every client's pool to time out)."""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

from typing_extensions import Self

logger = logging.getLogger("openmonetize.testing")

JOIN_TIMEOUT = 10.0

AppT = TypeVar("AppT")


class LoopbackHTTPServer(ThreadingHTTPServer, Generic[AppT]):
    """Threaded HTTP server that knows its open connections; `app` is what the handlers serve."""

    daemon_threads = True  # a forgotten server never blocks interpreter exit
    # socketserver listens with a backlog of 5: more clients connecting at once (concurrent async calls, the
    # background client's senders) had connection attempts dropped by the kernel and retried a second later
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: AppT) -> None:
        self.app = app
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._closing = False
        # set by stop(): handlers that pace their writes (a trickled answer) wait on it instead of sleeping
        self.stopping = threading.Event()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            if self._closing:
                _shutdown(connection)
            self._connections[connection] = threading.current_thread()

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.pop(connection, None)

    def serve_in_background(self, name: str) -> threading.Thread:
        thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.01},  # bounds how long stop() waits
            name=name,
            daemon=True,
        )
        thread.start()
        return thread

    def stop(self, thread: threading.Thread, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop serving, wake handlers idling on keep-alive connections and wait for them to end."""
        self.stopping.set()
        self.shutdown()
        with self._connections_lock:
            self._closing = True
            open_now = list(self._connections.items())
        for connection, _ in open_now:
            _shutdown(connection)
        deadline = time.monotonic() + timeout
        for _, handler_thread in open_now:
            if handler_thread is not threading.current_thread():
                handler_thread.join(max(0.0, deadline - time.monotonic()))
        self.server_close()
        thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            logger.debug("connection from %s ended: %r", client_address, error)
        else:
            logger.exception("error while serving %s", client_address)


class TrackedHandler(BaseHTTPRequestHandler):
    """Keep-alive request handler whose connection the server can close on stop."""

    server: LoopbackHTTPServer[Any]
    protocol_version = "HTTP/1.1"  # keep-alive, so client connection pools are exercised
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body
    # waits for the client's delayed ACK and every answer takes ~40 ms.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)


def _shutdown(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        connection.shutdown(socket.SHUT_RDWR)


class LoopbackService:
    """Start, stop, `with` and `url` for a server object its handlers reach as `self.server.app`.

    Subclasses name their thread, and open or close what they serve from in the hooks.
    """

    _thread_name: ClassVar[str]

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._lifecycle = threading.Lock()
        self._httpd: LoopbackHTTPServer[Self] | None = None
        self._thread: threading.Thread | None = None

    def _open(self) -> None:
        """Runs once the port is bound, before serving; an exception unbinds it."""

    def _close(self) -> None:
        """Runs once serving has stopped."""

    def start(self) -> Self:
        """Bind and serve in a daemon thread; a no-op when already running."""
        with self._lifecycle:
            if self._httpd is not None:
                return self
            httpd = LoopbackHTTPServer((self._host, self._port), self._handler, self)
            try:
                self._open()
            except BaseException:
                httpd.server_close()
                raise
            self._port = httpd.server_address[1]
            self._thread = httpd.serve_in_background(f"{self._thread_name}-{self._port}")
            self._httpd = httpd
        return self

    def stop(self) -> None:
        """Stop serving, close open (keep-alive) connections, wait for handlers, then `_close`."""
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            if httpd is None or thread is None:
                return
            httpd.stop(thread)
            self._httpd = self._thread = None
            self._close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        if self._port == 0:
            raise RuntimeError("the server has no port yet; call start() first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"
