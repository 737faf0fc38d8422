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
from typing import Any, Generic, TypeVar

logger = logging.getLogger("openmonetize.testing")

JOIN_TIMEOUT = 10.0

AppT = TypeVar("AppT")


class LoopbackHTTPServer(ThreadingHTTPServer, Generic[AppT]):
    """Threaded HTTP server that knows its open connections; `app` is what the handlers serve."""

    daemon_threads = True  # a forgotten server never blocks interpreter exit

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: AppT) -> None:
        self.app = app
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._closing = False
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
