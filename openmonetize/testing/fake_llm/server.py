"""The server: FakeLLMServer (requests recorded, faults queued) and its HTTP handler (JSON, content and
chunked event streams)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

from ..loopback import LoopbackHTTPServer, LoopbackService, TrackedHandler
from .errors import _error, _request_id_header
from .multipart import _form
from .replies import Json, _Call, _dumps, _Reply
from .routing import _PATHS, _Endpoint, _route
from .usage import REPLY_CHUNKS

logger = logging.getLogger("openmonetize.testing.fake_llm")


@dataclass(frozen=True)
class RecordedRequest:
    """One provider request as received; headers are left out so API keys are never kept."""

    provider: str
    path: str  # e.g. "/openai/v1/chat/completions", without the query
    query: str  # raw query string, e.g. "alt=sse", or ""
    json: Json  # the parsed body ({} when it is not a JSON object)



# ---------------------------------------------------------------------------- server


class FakeLLMServer(LoopbackService):
    """Fake OpenAI, OpenRouter, Groq, Anthropic and Gemini HTTP APIs on loopback, with fixed usage.

    See the module docstring for the endpoints and the meaning of every number in ``USAGE``.
    """

    _thread_name = "openmonetize-fake-llm"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, _Handler)
        self._lock = threading.Lock()
        self._seq = 0
        self._requests: list[RecordedRequest] = []
        self._failures: deque[int] = deque()  # statuses of the next failing requests
        self._cuts: deque[int] = deque()  # content chunks the next streams get before the cut

    def __repr__(self) -> str:
        return f"<FakeLLMServer {self.url if self.running else 'stopped'}>"

    def base_url(self, provider: str) -> str:
        """What to pass as the SDK client's base URL for ``provider``.

        openai / openrouter: ``openai.OpenAI(base_url=...)``; groq: ``groq.Groq(base_url=...)``;
        anthropic: ``anthropic.Anthropic(base_url=...)``; gemini:
        ``genai.Client(http_options=types.HttpOptions(base_url=...))``.
        """
        try:
            return self.url + _PATHS[provider]
        except KeyError:
            raise ValueError(f"unknown provider {provider!r}; one of {sorted(_PATHS)}") from None

    # -- inspection and faults

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to a provider endpoint, failed and refused ones included, in arrival order."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` provider requests with ``status`` and the provider's error body."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        with self._lock:
            self._failures.extend([status] * n)

    def cut_next_stream(self, after_chunks: int = 1) -> None:
        """Make the next streamed answer close its connection after ``after_chunks`` content chunks.

        No final chunk, usage or end event is sent and the chunked body is left unterminated,
        so the SDK raises while iterating. Non-streamed requests do not consume it.
        """
        if not 0 <= after_chunks <= len(REPLY_CHUNKS):
            raise ValueError(f"after_chunks must be between 0 and {len(REPLY_CHUNKS)}")
        with self._lock:
            self._cuts.append(after_chunks)

    def reset(self) -> None:
        """Forget recorded requests and pending faults (ids keep counting up)."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            self._cuts.clear()

    # -- request handling (called from handler threads)

    def _answer(self, method: str, target: str, raw: bytes, content_type: str = "") -> tuple[_Reply, int | None]:
        """The reply, and how many content chunks to send before cutting it (None: send it all)."""
        path, _, query = target.partition("?")
        found = _route(path)
        if found is None:
            provider = next((p for p, prefix in _PATHS.items() if path.startswith(prefix + "/")), "openai")
            return _error(provider, 404, f"no fake endpoint at {method} {path[:200]}"), None
        endpoint, path_model = found
        provider = endpoint.provider
        if method != "POST":
            return _error(provider, 405, f"{path} only accepts POST"), None
        if content_type.lower().startswith("multipart/form-data"):
            parsed: Any = _form(raw, content_type)
        else:
            try:
                parsed = json.loads(raw) if raw.strip() else {}
            except ValueError:  # includes UnicodeDecodeError
                parsed = None
        body: Json = parsed if isinstance(parsed, dict) else {}
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._requests.append(RecordedRequest(provider, path, query, body))
            failure = self._failures.popleft() if self._failures else None
        reply, cut = self._build(endpoint, path_model, parsed, seq, failure)
        return replace(reply, headers={**_request_id_header(provider, seq), **reply.headers}), cut

    def _build(
        self, endpoint: _Endpoint, path_model: str, parsed: Any, seq: int, failure: int | None
    ) -> tuple[_Reply, int | None]:
        """The queued failure, a refusal of a malformed request, or the endpoint's answer."""
        provider = endpoint.provider
        if failure is not None:
            return _error(provider, failure, f"fake {failure} injected by FakeLLMServer.fail_next", seq), None
        if not isinstance(parsed, dict):
            return _error(provider, 400, "the body is not a JSON object (or a multipart form)", seq), None
        missing = [name for name in endpoint.required if name not in parsed]
        if missing:
            return _error(provider, 400, f"missing required field(s): {', '.join(missing)}", seq), None
        model = path_model or parsed.get("model", endpoint.default_model)
        if not isinstance(model, str):
            return _error(provider, 400, "model must be a string", seq), None
        reply = endpoint.build(_Call(provider, endpoint.name, model, parsed, seq, int(time.time())))
        cut = None
        if reply.body is None and reply.content is None:
            with self._lock:
                cut = self._cuts.popleft() if self._cuts else None
        return reply, cut


# ---------------------------------------------------------------------------- HTTP


class _Handler(TrackedHandler):
    """HTTP plumbing only: read the body, write a JSON answer or a chunked event stream."""

    server: LoopbackHTTPServer[FakeLLMServer]

    server_version = "FakeLLM/1"

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_json(_error("openai", 411, "send the body with a Content-Length"))
            return
        length = self.headers.get("Content-Length", "0").strip()
        if not (length.isascii() and length.isdigit()):
            self.close_connection = True
            self._send_json(_error("openai", 400, "invalid Content-Length"))
            return
        raw = self.rfile.read(int(length))
        try:
            reply, cut = self.server.app._answer(self.command, self.path, raw, self.headers.get("Content-Type", ""))
        except Exception:
            logger.exception("fake LLM server failed on %s %s", self.command, self.path)
            reply, cut = _error("openai", 500, "the fake LLM server failed; see its log"), None
        if reply.content is not None:
            self._send_content(reply)
        elif reply.body is None:
            self._send_stream(reply, cut)
        else:
            self._send_json(reply)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def _send_json(self, reply: _Reply) -> None:
        data = _dumps(reply.body)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_content(self, reply: _Reply) -> None:
        assert reply.content is not None
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.content)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.content)

    def _send_stream(self, reply: _Reply, cut: int | None) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        out: list[bytes] = []
        sent = 0
        for event in reply.events:
            if cut is not None and sent == cut and (event.content or sent > 0):
                break
            out.append(b"%x\r\n%s\r\n" % (len(event.data), event.data))
            sent += event.content
        if cut is None:
            out.append(b"0\r\n\r\n")
        else:
            self.close_connection = True  # the body stays unterminated: the client sees it cut short
        self.wfile.write(b"".join(out))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Called by http.server for framing problems (bad request line, huge headers, ...).
        self.close_connection = True
        self._send_json(_error("openai", code, message or HTTPStatus(code).phrase))

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):  # called for every request: format only when shown
            logger.debug("%s %s", self.address_string(), format % args)
