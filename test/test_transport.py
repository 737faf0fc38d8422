"""The generated HTTP layer over loopback: one request per call with retries off, a deadline for the whole
request, and every transport failure an openmonetize exception naming cause and host (never urllib3's).

No wall-clock assertions: a call that must be bounded runs in a thread joined with a generous timeout while
the server's answer would take minutes.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import API_KEY

from openmonetize import ApiClient, CustomEvent, EventsApi
from openmonetize.configuration import Configuration
from openmonetize.exceptions import ApiConnectionError, ApiException, ApiTimeoutError
from openmonetize.testing import LocalIngestServer

JOIN = 30.0  # generous bound for calls that must end on their own
VALID = {"accepted": 1, "duplicates": 0, "rejected": 0}


def event(n: int = 0) -> CustomEvent:
    return CustomEvent(customer_id="cust", feature_id="f", unit_type="pages", quantity=n + 1)


def serialized(*events: CustomEvent) -> bytes:
    """A request body as background delivery sends it."""
    return b'{"events":[' + b",".join(e.model_dump_json(exclude_none=True).encode() for e in events) + b"]}"


def make_api(host: str, retries: Any = False) -> EventsApi:
    config = Configuration(host=host, access_token=API_KEY)
    config.retries = retries
    config.max_retries = 0  # one attempt per call: these tests look at a single request (test_direct_retry.py)
    return EventsApi(ApiClient(config))


@pytest.fixture
def api(server: LocalIngestServer) -> Iterator[EventsApi]:
    """The client as background delivery configures it: urllib3 retries nothing."""
    events_api = make_api(server.url)
    yield events_api
    events_api.api_client.rest_client.pool_manager.clear()


def call_in_thread(fn: Callable[[], object]) -> dict[str, Any]:
    """Run ``fn`` in a thread; return what it returned or raised once it ended (fail if it did not)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(JOIN)
    assert not thread.is_alive(), f"the call did not end within {JOIN} s"
    return outcome


def assert_no_key(error: BaseException) -> None:
    texts = [str(error), repr(error), str(getattr(error, "reason", ""))]
    for text in texts:
        assert API_KEY not in text


# ------------------------------------------------------------------ one request per call, no redirect


@pytest.mark.parametrize("fault", ["503", "429", "drop", "redirect", "broken 2xx"])
def test_with_retries_off_each_call_is_exactly_one_request(api, server, fault):
    if fault == "drop":
        server.drop_next()
    elif fault == "redirect":
        server.fail_next(1, status=307, headers={"Location": "/v1/events/ingest"})
    elif fault == "broken 2xx":
        server.fail_next(1, status=202, raw=b"")
    else:
        server.fail_next(1, status=int(fault), retry_after=0)

    with pytest.raises(ApiException) as caught:
        api.ingest(events=[event()])

    assert server.request_count == 1
    if fault == "redirect":
        assert caught.value.status == 307 and type(caught.value) is ApiException
    assert api.ingest(events=[event()]).accepted == 1
    assert server.request_count == 2


# ------------------------------------------------------------------ the deadline of the whole request


def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(api, server):
    # a valid answer, padded: at a byte every 0.5 s it would take minutes to arrive
    padded = json.dumps(VALID).encode() + b" " * 200
    assert len(padded) * 0.5 > 60
    server.fail_next(1, status=202, raw=padded, store=True)
    server.trickle_next(1, interval=0.5)

    outcome = call_in_thread(lambda: api.ingest(events=[event()], _request_timeout=1))

    error = outcome.get("error")
    assert isinstance(error, ApiTimeoutError), outcome
    assert isinstance(error, ApiConnectionError) and error.status == 0
    assert error.host == f"http://127.0.0.1:{server.port}"
    assert error.host in str(error) and "1 s" in str(error)
    assert error.timeout == 1
    assert error.__cause__ is not None
    assert_no_key(error)
    # the client is usable at once, and the stored events come back as duplicates
    answer = api.ingest(events=[event()], _request_timeout=5)
    assert answer.accepted == 1
    assert server.request_count == 2


def test_the_deadline_holds_for_the_serialized_path_of_background_delivery(api, server):
    body = serialized(event())
    server.trickle_next(1, interval=0.5, store=False)  # a 503 of ~150 bytes: > 60 s

    outcome = call_in_thread(lambda: api.ingest_serialized(body, _request_timeout=0.5, _event_count=1))

    assert isinstance(outcome.get("error"), ApiTimeoutError), outcome
    assert server.events == []


class SlowBodyServer:
    """Sends complete headers at once, then the body one byte per ``interval`` until the client goes away:
    the deadline must cut the connection while the body is being read, after the headers were returned."""

    def __init__(self, interval: float = 0.2, length: int = 10_000) -> None:
        self.interval, self.length = interval, length
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.05)
            if not ready:
                continue
            conn, _ = self.listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head = (f"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {self.length}\r\n\r\n").encode()
                try:
                    conn.sendall(head)
                    while not self.stopping.wait(self.interval):
                        conn.sendall(b" ")
                except OSError:
                    pass  # the client went away

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(JOIN)
        self.listener.close()


def test_the_deadline_covers_the_body_after_the_headers_arrived():
    slow = SlowBodyServer()
    try:
        api = make_api(f"http://127.0.0.1:{slow.port}")
        outcome = call_in_thread(lambda: api.ingest(events=[event()], _request_timeout=1))
    finally:
        slow.close()
    error = outcome.get("error")
    assert isinstance(error, ApiTimeoutError), outcome
    assert error.host == f"http://127.0.0.1:{slow.port}"


def test_a_tuple_keeps_per_operation_timeouts_and_is_mapped(api, server):
    server.delay_next(1, seconds=2)
    with pytest.raises(ApiTimeoutError) as caught:
        api.ingest(events=[event()], _request_timeout=(1, 0.2))
    assert caught.value.timeout == (1, 0.2)
    assert "per socket operation" in str(caught.value)


def test_many_threads_with_deadlines_share_the_pool_without_false_timeouts(server):
    api = make_api(server.url)
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        for i in range(25):
            try:
                api.ingest(events=[event(n * 100 + i)], _request_timeout=10)
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert len(server.events) == 150


# ------------------------------------------------------------------ requests that could not be completed


def test_a_refused_connection_is_an_api_connection_error_naming_the_host():
    with socket.socket() as bound:  # bound, never listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        for retries in (False, None):  # urllib3's own retries (the direct default) end the same way
            with pytest.raises(ApiConnectionError) as caught:
                make_api(f"http://127.0.0.1:{port}", retries=retries).ingest(events=[event()], _request_timeout=5)
            error = caught.value
            assert type(error) is ApiConnectionError
            assert error.status == 0
            assert error.host == f"http://127.0.0.1:{port}"
            assert error.host in str(error) and "ConnectionRefusedError" in str(error)
            assert error.__cause__ is not None
            assert_no_key(error)


def test_a_connection_cut_before_any_answer_is_an_api_connection_error(api, server):
    server.drop_next()
    with pytest.raises(ApiConnectionError) as caught:
        api.ingest(events=[event()], _request_timeout=5)
    error = caught.value
    assert type(error) is ApiConnectionError
    assert error.host == f"http://127.0.0.1:{server.port}" and error.host in str(error)
    assert_no_key(error)


def test_a_connection_cut_in_the_middle_of_the_body_is_an_api_connection_error(api, server):
    server.fail_next(1, status=202, raw=json.dumps(VALID).encode(), headers={"Content-Length": "500"}, store=True)
    with pytest.raises(ApiConnectionError) as caught:
        api.ingest(events=[event()])
    assert type(caught.value) is ApiConnectionError
    assert "IncompleteRead" in str(caught.value)


def test_the_key_is_in_no_exception_text(server):
    """Every failure kind, with the key in the request's Authorization header."""
    api = make_api(server.url)
    errors: list[BaseException] = []
    plans: list[Callable[[], None]] = [
        lambda: server.fail_next(1, status=500),
        lambda: server.fail_next(1, status=202, raw=b"<html></html>"),
        lambda: server.drop_next(),
        lambda: server.trickle_next(1, interval=0.5),
    ]
    for plan in plans:
        plan()
        try:
            api.ingest(events=[event()], _request_timeout=1)
        except ApiException as exc:
            errors.append(exc)
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        try:
            make_api(f"http://127.0.0.1:{bound.getsockname()[1]}").ingest(events=[event()])
        except ApiException as exc:
            errors.append(exc)
    assert len(errors) == 5
    for error in errors:
        assert_no_key(error)


def test_transport_failure_text_never_carries_a_credential_header():
    from openmonetize.lib import http_deadline

    scope = http_deadline.begin("https://user:pw@api.example:8443/v1/x?q=1", (1, 2),
                                {"Authorization": f"Bearer {API_KEY}"})
    error = scope.failure(OSError(f"peer echoed Bearer {API_KEY} and {API_KEY}"))
    assert error.host == "https://api.example:8443"
    assert API_KEY not in str(error) and "pw" not in str(error) and "<redacted>" in str(error)


def test_the_watchdog_works_again_in_a_forked_child(server):
    api = make_api(server.url)
    api.ingest(events=[event()], _request_timeout=5)  # the parent's watchdog runs
    server.trickle_next(1, interval=0.5)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh client, a trickled answer, a bounded call
        code = 1
        try:
            make_api(server.url).ingest(events=[event(1)], _request_timeout=0.5)
        except ApiTimeoutError:
            code = 0
        except BaseException:
            code = 2
        finally:
            os.write(write_end, bytes([code]))
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], JOIN)
        assert ready, "the child's call did not end"
        assert os.read(read_end, 1) == b"\x00"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


# ------------------------------------------------------------------ the request's own work, cached per process


def test_each_host_is_named_in_its_own_failures_and_credentials_in_the_url_never():
    """The origin a failure names is cached per URL (http_deadline._origin): a second host in the same
    process is named as itself, and a URL's user info is never part of it."""
    with socket.socket() as first, socket.socket() as second:  # bound, never listening: refused
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        hosts = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in (first, second)]
        for host in hosts + hosts:  # twice each: the second time from the cache
            with pytest.raises(ApiConnectionError) as caught:
                make_api(host).ingest(events=[event()], _request_timeout=5)
            assert caught.value.host == host and host in str(caught.value)
        port = second.getsockname()[1]
        with pytest.raises(ApiConnectionError) as caught:
            make_api(f"http://user:url-secret@127.0.0.1:{port}").ingest(events=[event()], _request_timeout=5)
        assert caught.value.host == f"http://127.0.0.1:{port}"
        assert "url-secret" not in str(caught.value) and "url-secret" not in repr(caught.value)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON"])
def test_a_body_sent_with_any_json_content_type_arrives_as_serialized(api, server, content_type):
    events = [event(n) for n in range(3)]
    answer = api.ingest(events=events, _content_type=content_type)
    assert answer.accepted == 3
    assert server.events == [json.loads(e.model_dump_json(exclude_none=True)) for e in events]
    assert server.received_requests[-1].headers["Content-Type"] == content_type


@pytest.mark.parametrize("content_type", ["application/yaml", "text/yaml", "text/x-yaml", "text/plain"])
def test_a_serialized_body_with_another_content_type_is_sent_as_it_is(api, server, content_type):
    """Not JSON: the body (already bytes) goes out unchanged under the caller's type, and the service refuses
    the type; it is never serialized again."""
    with pytest.raises(ApiException) as caught:
        api.ingest(events=[event()], _content_type=content_type)
    assert caught.value.status == 415
    assert server.events == []
    assert server.received_requests[-1].headers["Content-Type"] == content_type


def test_content_type_matching_is_the_same_every_time():
    """`contenttype_matches` is cached: the same answers, first call or not."""
    from openmonetize.rest import contenttype_matches

    table = [("application/json", "application", "json", True), ("application/json; charset=utf-8",
             "application", "json", True), ("application/problem+json", "application", "json", True),
             ("APPLICATION/JSON", "application", "json", True), ("application/jsonx", "application", "json",
             False), ("text/json", "application", "json", False), ("application/yaml", "application", "yaml",
             True), ("text/x-yaml ;q=1", "text", "x-yaml", True), ("text/yaml", "application", "yaml", False)]
    for _ in range(2):
        for content_type, main, sub, expected in table:
            assert contenttype_matches(content_type, main, sub) is expected, (content_type, main, sub)


def test_the_body_ingest_sends_is_byte_for_byte_each_events_own_json_joined():
    """`ingest`'s body (one call of the body model's serializer) is the bytes background delivery sends for
    the same events (each event's own JSON, joined): mixed types, metadata, non-ASCII text, offsets."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from openmonetize import ImageGenerationEvent, TokenUsageEvent
    from openmonetize.models.event import Event

    bodies: list[bytes] = []

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            bodies.append(raw)
            answer = json.dumps({"accepted": len(json.loads(raw)["events"]), "duplicates": 0,
                                 "rejected": 0}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    events: list[Event] = [
        TokenUsageEvent(customer_id="cust_é", feature_id="chat", provider="openai", model="gpt-4o",
                        input_tokens=10, output_tokens=2, metadata={"k": None, "nested": [1, 2.5, "ü"]}),
        ImageGenerationEvent(customer_id="c", feature_id="img", provider="openai", model="gpt-image-1",
                             image_count=1, timestamp="2026-11-22T17:00:00.5+02:00"),
        CustomEvent(customer_id="c", user_id="u", feature_id="pdf", unit_type="pages", quantity=1.25,
                    timestamp="2026-11-22T17:00:00Z"),
    ]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        answer = make_api(f"http://127.0.0.1:{httpd.server_address[1]}").ingest(events=events)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(JOIN)
    assert answer.accepted == 3
    each = [e.model_dump_json(exclude_none=True).encode() for e in events]
    assert bodies == [b'{"events":[' + b",".join(each) + b"]}"]
