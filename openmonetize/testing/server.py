"""A real HTTP server speaking the ingest contract, for development, demos and tests.

It runs in a background thread on loopback, checks every request against
``openapi.yaml`` and can be told to misbehave (errors, answers that break the contract,
delays, dropped connections, answers trickled a byte at a time) so that client retry
and answer-checking logic is exercised over real sockets rather than mocks.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import random
import re
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from email.message import Message
from http import HTTPStatus
from typing import Any

from openmonetize.lib import strict_json

from .faults import Fault, FaultPlan, Trickle
from .loopback import LoopbackHTTPServer, LoopbackService, TrackedHandler
from .spec import INGEST_PATH, IngestContract, Problem, load_contract
from .store import EventStore, MemoryStore, SqliteStore, SummaryRow

__all__ = ["LocalIngestServer", "ReceivedRequest"]

logger = logging.getLogger("openmonetize.testing")

_MAX_DETAILS = 100
_DRAIN_LIMIT = 64 * 1024 * 1024  # past this an oversized body is cut off, not read
_LINE_LIMIT = 65536
# Only text with such an escape can decode to a lone surrogate, which is not Unicode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_KEPT_REQUESTS = 1000  # `received_requests` remembers this many: a long `openmonetize serve` stays small
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as the server saw it: what a test asserts on (the client's User-Agent, the request id the
    client's exception should carry). Credentials (``Authorization``, ``X-API-Key``, cookies) are recorded as
    ``<redacted>``, never their value."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None  # None: the connection was closed unanswered (`drop_next`)
    request_id: str | None  # the X-Request-Id answered, None when none was


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Mapping[str, Any] | None  # None (and no raw): close the connection without answering
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # the body as it is, instead of `body` as JSON
    content_type: str = "application/json"  # "": no Content-Type header
    trickle: float | None = None  # seconds between the answer's bytes


_DROP = _Answer(0, None)


class _Refused(Exception):
    """Carries the error answer out of request decoding."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def _error(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, str]] | None = None,
) -> _Answer:
    body: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return _Answer(status, body, headers or {})


def _too_large(limit: int) -> _Answer:
    return _error(413, "PAYLOAD_TOO_LARGE", f"the request body exceeds {limit} bytes")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _status_code_name(status: int) -> str:
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "HTTP_ERROR"


def _seconds_header(seconds: float) -> str:
    """Retry-After value; fractions (millisecond precision) keep fault tests fast."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------- server


class LocalIngestServer(LoopbackService):
    """A local stand-in for the ingest API that enforces the OpenAPI contract.

    Usage::

        with LocalIngestServer() as server:
            ...  # point the SDK at server.url, authenticated with server.api_key
            assert server.summary()[0]["input_tokens"] == 1000

    Requests are validated against ``openapi.yaml`` itself (plus the rules the spec
    states in prose), so a client bug surfaces as a 400 with the offending JSON path.
    Events are kept in memory, or in SQLite when ``db_path`` is given, in which case
    deduplication survives restarts. A memory store lives as long as this object, so
    stopping and starting the same instance keeps its events.
    """

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        db_path: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        super().__init__(host, port, _Handler)
        self._api_key = api_key
        self._key_bytes = api_key.encode("utf-8")
        self.max_body_bytes = max_body_bytes
        self._store: EventStore = MemoryStore() if db_path is None else SqliteStore(db_path)
        self._faults = FaultPlan()
        self._counter_lock = threading.Lock()
        self._requests = 0
        self._duplicates_received = 0
        self._gzip_requests = 0
        self._rejected_customers: frozenset[str] = frozenset()
        self._rejected_status: int | None = None
        self._contract: IngestContract | None = None
        self._request_seq = 0
        self._received: deque[ReceivedRequest] = deque(maxlen=_KEPT_REQUESTS)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = self.url if self.running else f"{self._host}:{self._port}"
        storage = "memory" if isinstance(self._store, MemoryStore) else repr(self._store)
        return f"<LocalIngestServer {where} {state} store={storage}>"

    # -- lifecycle

    _thread_name = "openmonetize-local-ingest"

    def _open(self) -> None:
        self._contract = load_contract()
        self._store.open()

    def _close(self) -> None:
        self._store.close()

    def start(self) -> LocalIngestServer:
        """Bind and serve in a daemon thread; a no-op when already running."""
        super().start()
        logger.info("local ingest server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, wait for handlers, close the store."""
        super().stop()
        logger.info("local ingest server on port %s stopped", self._port)

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._port

    @property
    def api_key(self) -> str:
        return self._api_key

    # -- inspection

    @property
    def events(self) -> list[dict[str, Any]]:
        """Copies of the accepted events, in acceptance order."""
        return self._store.events()

    @property
    def event_ids(self) -> set[str]:
        return self._store.event_ids()

    def summary(self) -> list[SummaryRow]:
        """Usage totals per (customer_id, feature_id, model, unit_type), sorted by that key.

        Each row is a :class:`~openmonetize.testing.store.SummaryRow`: the four key
        fields, ``events`` (count), the int totals ``input_tokens``, ``output_tokens``,
        ``cached_input_tokens``, ``reasoning_tokens``, ``image_count`` and the float
        total ``quantity``. ``model`` is None for CUSTOM events, ``unit_type`` is None
        for the others; totals that do not apply to a group are 0.
        """
        return self._store.summary()

    @property
    def request_count(self) -> int:
        """Every request received, including refused, faulted and malformed ones."""
        with self._counter_lock:
            return self._requests

    @property
    def received_requests(self) -> list[ReceivedRequest]:
        """The last 1000 requests answered (or dropped), oldest first, with the ``X-Request-Id`` each was
        answered with: every answer carries one, ``req_1``, ``req_2``, ... in answer order, unless a
        ``fail_next(headers=...)`` names its own (or ``""`` to send none)."""
        with self._counter_lock:
            return list(self._received)

    @property
    def duplicates_received(self) -> int:
        """Events received again after they were stored: what a client sent more than once."""
        with self._counter_lock:
            return self._duplicates_received

    @property
    def gzip_requests(self) -> int:
        """Requests whose body came with `Content-Encoding: gzip`."""
        with self._counter_lock:
            return self._gzip_requests

    def reject_customers(self, customer_ids: Iterable[str], *, status: int | None = None) -> None:
        """Refuse events of these customers.

        By default individually, in a 2xx answer (`rejected`, `errors`), as the service does for business
        reasons; the rest of the batch is stored. With `status` (400, 403, 422), a batch holding any of
        them is refused whole with that status and no per-event indexes, as the upstream service does for
        a rule the client does not know (version skew) or a customer the key may not bill: a client must
        split the batch to deliver the others.
        """
        if status is not None and not 400 <= status <= 499:
            raise ValueError("status must be a 4xx status")
        self._rejected_customers = frozenset(customer_ids)
        self._rejected_status = status

    @property
    def faults_injected(self) -> int:
        return self._faults.injected

    def reset(self) -> None:
        """Forget stored events, counters and pending or random faults."""
        self._store.clear()
        self._faults.clear()
        self._rejected_customers = frozenset()
        self._rejected_status = None
        with self._counter_lock:
            self._requests = 0
            self._duplicates_received = 0
            self._gzip_requests = 0
            self._request_seq = 0
            self._received.clear()

    # -- fault injection (applied to the next requests in arrival order)

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        retry_after: float | None = None,
        body: Mapping[str, Any] | None = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        store: bool = False,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (200-599) instead of the real answer.

        The body is an ErrorResponse unless ``body`` (sent as JSON) or ``raw`` (sent byte for byte: HTML,
        nothing, truncated JSON) is given; a 204 or 304 sends no body. ``content_type`` replaces
        ``application/json`` (``""`` sends none); ``headers`` are added, and a ``Content-Length`` among
        them replaces the real one (the connection is closed after the answer, so a length longer than
        the body is a connection cut mid-answer); an ``X-Request-Id`` among them replaces the server's own,
        and a header given as ``""`` is not sent at all (``{"X-Request-Id": ""}``: an answer without one).
        ``retry_after`` adds a ``Retry-After`` header
        (fractional seconds keep tests fast). With ``store`` the batch is first processed and stored as
        usual, so the client gets the planned answer for events the service kept (a resend is a
        duplicate): what a broken 2xx, or an error after the commit, looks like. Without it nothing is stored.
        """
        if not 200 <= status <= 599:
            raise ValueError("status must be a final HTTP status other than 1xx (200-599)")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if raw is not None and body is not None:
            raise ValueError("give body (JSON) or raw (bytes), not both")
        fault = Fault("fail", status=status, retry_after=retry_after, body=body, raw=raw,
                      content_type=content_type, headers=dict(headers or {}), store=store)
        self._faults.enqueue(fault, n)

    def trickle_next(self, n: int = 1, interval: float = 0.5, store: bool = True) -> None:
        """Write the answers of the next ``n`` requests one byte every ``interval`` seconds.

        Every byte counts, the status line and headers included, so each socket read a client makes
        gets data in time and only a deadline for the whole request ends the wait. The answer is the
        one planned for the request (``fail_next``) or the real one; ``store`` says, when none is planned,
        whether the batch is processed and stored (the real answer is trickled) or not (a 503 is). It
        stops when the client goes away, and never holds up ``stop()``.
        """
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self._faults.enqueue_trickle(Trickle(interval=interval, store=store), n)

    def delay_next(self, n: int = 1, seconds: float = 0.5) -> None:
        """Sleep ``seconds`` before handling each of the next ``n`` requests normally."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._faults.enqueue(Fault("delay", seconds=seconds), n)

    def drop_next(self, n: int = 1) -> None:
        """Read each of the next ``n`` requests, then close the connection unanswered."""
        self._faults.enqueue(Fault("drop"), n)

    def set_fault_rate(
        self,
        rate: float,
        *,
        seed: int | None = None,
        statuses: Iterable[int] = (500, 502, 503, 429),
        retry_after: float | None = 0.05,
        delay: float = 0.2,
        drop: bool = True,
    ) -> None:
        """Fault each request with probability ``rate``; ``0`` turns this off.

        A faulted request gets, with equal odds, one of the enabled kinds: an error
        status (any of ``statuses`` except 429), a 429, a ``delay`` before normal
        handling, or a dropped connection. 429 and 503 answers carry ``Retry-After:
        retry_after``. With a ``seed``, sequential requests see a reproducible sequence.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        codes = list(statuses)
        if any(not 400 <= code <= 599 for code in codes):
            raise ValueError("statuses must be HTTP error statuses (400-599)")

        def failure(code: int) -> Fault:
            wait = retry_after if code in (429, 503) else None
            return Fault("fail", status=code, retry_after=wait)

        menu = [
            [failure(code) for code in codes if code != 429],
            [failure(429)] if 429 in codes else [],
            [Fault("delay", seconds=delay)] if delay > 0 else [],
            [Fault("drop")] if drop else [],
        ]
        menu = [kind for kind in menu if kind]
        if rate > 0 and not menu:
            raise ValueError("no fault kind is enabled")
        self._faults.randomize(rate, random.Random(seed), menu)

    # -- request handling (called from handler threads)

    def _count_request(self) -> None:
        with self._counter_lock:
            self._requests += 1

    def _next_request_id(self) -> str:
        with self._counter_lock:
            self._request_seq += 1
            return f"req_{self._request_seq}"

    def _record(self, method: str, path: str, headers: Message | None, status: int | None,
                request_id: str | None) -> None:
        seen = {name: ("<redacted>" if name.lower() in _CREDENTIAL_HEADERS else value)
                for name, value in (headers.items() if headers is not None else [])}
        with self._counter_lock:
            self._received.append(ReceivedRequest(method, path, seen, status, request_id))

    def _respond(self, method: str, target: str, headers: Message, raw: bytes) -> _Answer:
        fault = self._faults.take()
        trickle = self._faults.take_trickle()
        answer = self._answer(fault, trickle, method, target, headers, raw)
        if trickle is not None and answer is not _DROP:
            logger.debug("trickling the answer to %s %s, a byte every %s s", method, target, trickle.interval)
            answer = replace(answer, trickle=trickle.interval)
        return answer

    def _answer(self, fault: Fault | None, trickle: Trickle | None, method: str, target: str, headers: Message,
                raw: bytes) -> _Answer:
        if fault is not None:
            logger.debug("injecting %s fault into %s %s", fault.kind, method, target)
            if fault.kind == "drop":
                return _DROP
            if fault.kind == "fail":
                if fault.store:
                    self._handle(method, target, headers, raw)  # stored; the client gets the planned answer
                return _planned(fault)
            time.sleep(fault.seconds)
        if trickle is not None and not trickle.store:
            return _error(503, "SERVICE_UNAVAILABLE", "injected fault: a trickled answer; nothing was stored")
        return self._handle(method, target, headers, raw)

    def _handle(self, method: str, target: str, headers: Message, raw: bytes) -> _Answer:
        try:
            return self._ingest(method, target, headers, raw)
        except Exception:
            logger.exception("local ingest server failed on %s %s", method, target)
            return _error(500, "INTERNAL_ERROR", "the local ingest server failed; see its log")

    def _ingest(self, method: str, target: str, headers: Message, raw: bytes) -> _Answer:
        path = target.split("?", 1)[0]
        if path != INGEST_PATH:
            return _error(404, "NOT_FOUND", f"no endpoint at {path[:200]}")
        if method != "POST":
            return _error(405, "METHOD_NOT_ALLOWED", f"{INGEST_PATH} only accepts POST", {"Allow": "POST"})
        if not self._authorized(headers):
            return _error(
                401,
                "UNAUTHORIZED",
                "missing or invalid API key; send 'Authorization: Bearer <key>' or 'X-API-Key'",
                {"WWW-Authenticate": "Bearer"},
            )
        media_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            shown = media_type[:100] or "none"
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type must be application/json, not {shown}")
        try:
            body = _decode_json(headers, raw, self.max_body_bytes)
        except _Refused as refused:
            return refused.answer

        assert self._contract is not None  # set by start()
        problems = self._contract.check_request(body, limit=_MAX_DETAILS)
        if problems:
            return _validation_error(problems)

        batch_id = f"batch_{uuid.uuid4().hex}"
        unknown_customers = self._rejected_customers
        if self._rejected_status is not None and any(e["customer_id"] in unknown_customers for e in body["events"]):
            status = self._rejected_status
            return _error(status, _status_code_name(status), "the batch holds an event this service refuses")
        events, errors = [], []
        for index, event in enumerate(body["events"]):
            if event["customer_id"] in unknown_customers:
                errors.append({"index": index, "event_id": event["event_id"], "code": "CUSTOMER_NOT_FOUND",
                               "message": f"customer {event['customer_id']} is not known"})
            else:
                events.append(event)
        accepted = self._store.add(events, batch_id)
        with self._counter_lock:
            self._duplicates_received += len(events) - accepted
            if headers.get("Content-Encoding", "").strip().lower() == "gzip":
                self._gzip_requests += 1
        answer: dict[str, Any] = {
            "accepted": accepted,
            "duplicates": len(events) - accepted,
            "rejected": len(errors),
            "batch_id": batch_id,
        }
        if errors:
            answer["errors"] = errors
        return _Answer(202 if accepted else 200, answer)

    def _authorized(self, headers: Message) -> bool:
        presented: list[str] = []
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            presented.append(token.strip())
        header_key = headers.get("X-API-Key")
        if header_key is not None:
            presented.append(header_key.strip())
        return any(hmac.compare_digest(p.encode("utf-8"), self._key_bytes) for p in presented)


def _with_request_id(answer: _Answer, next_id: Callable[[], str]) -> _Answer:
    """The answer with the server's ``X-Request-Id``, unless it names its own (or none, as ``""``)."""
    if any(name.lower() == "x-request-id" for name in answer.headers):
        return answer
    return replace(answer, headers={**answer.headers, "X-Request-Id": next_id()})


def _request_id_of_answer(answer: _Answer) -> str | None:
    for name, value in answer.headers.items():
        if name.lower() == "x-request-id":
            return value or None
    return None


def _planned(fault: Fault) -> _Answer:
    """The answer ``fail_next`` planned."""
    extra = dict(fault.headers or {})
    if fault.retry_after is not None:
        extra["Retry-After"] = _seconds_header(fault.retry_after)
    content_type = "application/json" if fault.content_type is None else fault.content_type
    if fault.raw is not None:
        return _Answer(fault.status, None, extra, raw=fault.raw, content_type=content_type)
    code = "RATE_LIMITED" if fault.status == 429 else _status_code_name(fault.status)
    body = fault.body if fault.body is not None else {"error": code, "message": f"injected fault: {fault.status}"}
    return _Answer(fault.status, body, extra, content_type=content_type)


def _validation_error(problems: list[Problem]) -> _Answer:
    first = problems[0]
    return _error(
        400,
        "VALIDATION_ERROR",
        f"{first.path}: {first.message}",
        details=[problem.as_detail() for problem in problems],
    )


def _decode_json(headers: Message, raw: bytes, limit: int) -> Any:
    """Undo Content-Encoding and parse strict JSON (no NaN, no infinities, valid Unicode)."""
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        raw = _gunzip(raw, limit)
    elif encoding not in ("", "identity"):
        raise _Refused(_error(400, "BAD_REQUEST", f"unsupported Content-Encoding {encoding[:50]}"))
    if not raw.strip():
        raise _Refused(_error(400, "INVALID_JSON", "the request body is empty"))
    try:
        text = raw.decode("utf-8")
        body = strict_json.loads(text)
    except (ValueError, RecursionError) as exc:  # includes JSONDecodeError, UnicodeDecodeError
        raise _Refused(_error(400, "INVALID_JSON", f"the body is not valid JSON: {exc}")) from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            message = "the body is not valid JSON: a string holds an unpaired surrogate"
            raise _Refused(_error(400, "INVALID_JSON", message)) from None
    return body


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise _Refused(_error(400, "BAD_REQUEST", "the gzip body is corrupt")) from None
    if len(out) > limit:
        raise _Refused(_too_large(limit))
    if not inflater.eof or inflater.unused_data:
        raise _Refused(_error(400, "BAD_REQUEST", "the gzip body is truncated or has trailing data"))
    return out


# ---------------------------------------------------------------------------- HTTP


class _Handler(TrackedHandler):
    """HTTP plumbing only: framing, body reading, writing answers."""

    server: LoopbackHTTPServer[LocalIngestServer]

    server_version = "OpenMonetizeLocalIngest/1"

    def parse_request(self) -> bool:
        self.server.app._count_request()
        if not super().parse_request():
            return False
        if not hasattr(self, f"do_{self.command}"):
            # An exotic method: answer 404/405 like any other, without reading a body.
            self.close_connection = True
            self._send(self.server.app._ingest(self.command, self.path, self.headers, b""))
            return False
        return True

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_POST

    def _serve(self) -> None:
        app = self.server.app
        try:
            raw = self._read_body(app.max_body_bytes)
        except _Refused as refused:
            self.close_connection = True  # the rest of the body is unread or unreadable
            self._send(refused.answer)
            return
        self._send(app._respond(self.command, self.path, self.headers, raw))

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b""
        declared = declared.strip()
        if not (declared.isascii() and declared.isdigit()):
            raise _Refused(_error(400, "BAD_REQUEST", "invalid Content-Length"))
        length = int(declared)
        if length > limit:
            self._discard(length)
            raise _Refused(_too_large(limit))
        data = self.rfile.read(length)
        if len(data) < length:
            raise _Refused(_error(400, "BAD_REQUEST", "the body is shorter than Content-Length"))
        return data

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_LINE_LIMIT)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Refused(_error(400, "BAD_REQUEST", "invalid chunked encoding")) from None
            if size < 0:
                raise _Refused(_error(400, "BAD_REQUEST", "invalid chunked encoding"))
            if size == 0:
                break
            total += size
            if total > _DRAIN_LIMIT:
                raise _Refused(_too_large(limit))
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _Refused(_error(400, "BAD_REQUEST", "truncated chunked body"))
            if total <= limit:  # past the limit, keep reading only so the 413 is seen
                chunks.append(chunk)
            self.rfile.readline(_LINE_LIMIT)  # the CRLF closing the chunk
        while self.rfile.readline(_LINE_LIMIT) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields
        if total > limit:
            raise _Refused(_too_large(limit))
        return b"".join(chunks)

    def _discard(self, length: int) -> None:
        """Read an oversized body so the client gets to see the 413 instead of a reset."""
        remaining = length if length <= _DRAIN_LIMIT else 0
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)

    def _send(self, answer: _Answer) -> None:
        app = self.server.app
        # send_error may run before the request line was parsed: no command, path or headers yet
        method, path = getattr(self, "command", None) or "", getattr(self, "path", "")
        headers = getattr(self, "headers", None)
        if answer.body is None and answer.raw is None:
            self.close_connection = True
            app._record(method, path, headers, None, None)
            return
        answer = _with_request_id(answer, app._next_request_id)
        app._record(method, path, headers, answer.status, _request_id_of_answer(answer))
        data = answer.raw if answer.raw is not None else json.dumps(answer.body).encode("utf-8")
        bodiless = answer.status in (204, 304)
        message = self._head(answer, len(data), bodiless)
        if not bodiless and self.command != "HEAD":
            message += data
        if answer.trickle is None:
            self.wfile.write(message)
        else:
            self._trickle(message, answer.trickle)

    def _head(self, answer: _Answer, length: int, bodiless: bool) -> bytes:
        """Status line and headers, built here (not by send_header) so that they can be trickled too."""
        self.log_request(answer.status)
        lines = [f"{self.protocol_version} {answer.status} {_phrase(answer.status)}",
                 f"Server: {self.version_string()}", f"Date: {self.date_time_string()}"]
        names = {name.lower() for name in answer.headers}
        if not bodiless:
            if answer.content_type:
                lines.append(f"Content-Type: {answer.content_type}")
            if "content-length" not in names:
                lines.append(f"Content-Length: {length}")
        if "content-length" in names:
            self.close_connection = True  # a planned length may not frame the body: never reuse this connection
        for name, value in answer.headers.items():
            if value == "":
                continue  # fail_next(headers={name: ""}): not sent
            lines.append(f"{name}: {value}")
            if name.lower() == "connection" and value.strip().lower() == "close":
                self.close_connection = True
        if self.close_connection and "connection" not in names:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _trickle(self, message: bytes, interval: float) -> None:
        """One byte, then a pause: until the message is out, the client is gone, or the server stops."""
        stopping = self.server.stopping
        for index in range(len(message)):
            if index and stopping.wait(interval):
                self.close_connection = True
                return
            try:
                self.wfile.write(message[index : index + 1])
            except OSError:  # the client went away
                self.close_connection = True
                return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Called by http.server for framing problems (bad request line, huge headers, ...).
        self.close_connection = True
        phrase = message or HTTPStatus(code).phrase
        self._send(_error(code, _status_code_name(code), phrase))

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)
