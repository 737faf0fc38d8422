"""LocalIngestServer over real loopback HTTP, driven by urllib3 directly (no SDK, no mocks)."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from conftest import API_KEY
from urllib3.exceptions import HTTPError, ProtocolError

from openmonetize.testing import LocalIngestServer

PATH = "/v1/events/ingest"
TIMESTAMP = "2026-11-22T17:00:00+00:00"


def token_event(event_id: str = "tok-1", **fields: Any) -> dict[str, Any]:
    event = {
        "event_type": "TOKEN_USAGE",
        "event_id": event_id,
        "customer_id": "cust_abc",
        "feature_id": "chat",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 500,
        "timestamp": TIMESTAMP,
    }
    return {**event, **fields}


def image_event(event_id: str = "img-1", **fields: Any) -> dict[str, Any]:
    event = {
        "event_type": "IMAGE_GENERATION",
        "event_id": event_id,
        "customer_id": "cust_abc",
        "feature_id": "avatars",
        "provider": "openai",
        "model": "dall-e-3",
        "image_count": 2,
        "timestamp": TIMESTAMP,
    }
    return {**event, **fields}


def custom_event(event_id: str = "cus-1", **fields: Any) -> dict[str, Any]:
    event = {
        "event_type": "CUSTOM",
        "event_id": event_id,
        "customer_id": "cust_abc",
        "feature_id": "pdf",
        "unit_type": "pages",
        "quantity": 10,
        "timestamp": TIMESTAMP,
    }
    return {**event, **fields}


class Client:
    """A thin urllib3 wrapper; retries are off so every fault is visible."""

    def __init__(self, server: LocalIngestServer) -> None:
        self.pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=1, retries=False, timeout=10.0)
        self.headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}

    def post(self, events: list[dict[str, Any]]) -> urllib3.BaseHTTPResponse:
        return self.send(json.dumps({"events": events}).encode())

    def send(
        self,
        body: bytes | None = None,
        *,
        method: str = "POST",
        path: str = PATH,
        headers: dict[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        return self.pool.request(method, path, body=body, headers=headers if headers is not None else self.headers)


def payload(response: urllib3.BaseHTTPResponse) -> Any:
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.data)


def detail_paths(response: urllib3.BaseHTTPResponse) -> list[str]:
    return [detail["path"] for detail in payload(response)["details"]]


@pytest.fixture
def client(server: LocalIngestServer) -> Iterator[Client]:
    client = Client(server)
    yield client
    client.pool.close()


# ------------------------------------------------------------------ accepted batches


@pytest.mark.parametrize("event", [token_event(), image_event(), custom_event()], ids=lambda e: e["event_type"])
def test_each_event_type_is_accepted(server: LocalIngestServer, client: Client, event: dict[str, Any]) -> None:
    response = client.post([event])

    assert response.status == 202
    body = payload(response)
    assert body["batch_id"].startswith("batch_")
    assert {k: v for k, v in body.items() if k != "batch_id"} == {"accepted": 1, "duplicates": 0, "rejected": 0}
    assert server.events == [event]
    assert server.event_ids == {event["event_id"]}


def test_optional_fields_are_accepted(server: LocalIngestServer, client: Client) -> None:
    event = token_event(
        user_id="user_1",
        team_id="team_1",
        cached_input_tokens=1000,
        reasoning_tokens=500,
        metadata={"request_id": "req_1", "nested": {"ok": [1, 2.5, None, True]}},
        timestamp="2026-11-22t17:00:00.123456z",
    )
    assert client.post([event, image_event(image_size="1024x1024", quality="hd")]).status == 202
    assert len(server.events) == 2


def test_mixed_batch_keeps_order(server: LocalIngestServer, client: Client) -> None:
    events = [custom_event(), token_event(), image_event()]

    response = client.post(events)

    assert response.status == 202
    assert payload(response)["accepted"] == 3
    assert server.events == events
    assert server.event_ids == {"cus-1", "tok-1", "img-1"}


def test_resend_is_answered_200_with_duplicates(server: LocalIngestServer, client: Client) -> None:
    events = [token_event(), image_event(), custom_event()]
    first = payload(client.post(events))

    response = client.post(events)

    assert response.status == 200
    second = payload(response)
    assert (second["accepted"], second["duplicates"], second["rejected"]) == (0, 3, 0)
    assert second["batch_id"] != first["batch_id"]
    assert len(server.events) == 3


def test_duplicates_inside_one_batch_are_stored_once(server: LocalIngestServer, client: Client) -> None:
    client.post([token_event("old")])

    response = client.post([token_event("a"), token_event("a", input_tokens=1), token_event("old"), token_event("b")])

    assert response.status == 202
    body = payload(response)
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 0)
    assert [e["event_id"] for e in server.events] == ["old", "a", "b"]
    assert server.events[1]["input_tokens"] == 1000  # the first copy wins


def test_connections_are_kept_alive(server: LocalIngestServer, client: Client) -> None:
    for index in range(5):
        assert client.post([token_event(f"e{index}")]).status == 202
    assert client.pool.num_connections == 1
    assert server.request_count == 5


def test_concurrent_batches_deduplicate_exactly(server: LocalIngestServer) -> None:
    statuses: list[int] = []
    accepted: list[int] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        client = Client(server)
        for batch in range(5):
            # Every worker sends ids 0..59, overlapping with every other worker.
            events = [token_event(f"id-{(worker + batch * 12 + i) % 60}") for i in range(12)]
            response = client.post(events)
            with lock:
                statuses.append(response.status)
                accepted.append(payload(response)["accepted"])
        client.pool.close()

    workers = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert len(statuses) == 40
    assert set(statuses) <= {200, 202}
    assert sum(accepted) == 60
    assert server.event_ids == {f"id-{n}" for n in range(60)}


# ------------------------------------------------------------------ refused batches


def _metadata_of_bytes(size: int) -> dict[str, str]:
    # {"k":"éé..."}: 8 bytes of JSON syntax, 2 bytes per "é".
    assert size % 2 == 0
    return {"k": "é" * ((size - 8) // 2)}


INVALID_EVENTS = [
    ("negative_tokens", token_event(input_tokens=-1), "input_tokens", "-1 is less than the minimum of 0"),
    (
        "reasoning_above_output",
        token_event(reasoning_tokens=501),
        "reasoning_tokens",
        "501 exceeds output_tokens (500)",
    ),
    (
        "cached_above_input",
        token_event(cached_input_tokens=1001),
        "cached_input_tokens",
        "1001 exceeds input_tokens (1000)",
    ),
    (
        "unknown_event_type",
        token_event(event_type="VIDEO"),
        "event_type",
        "'VIDEO' is not a known event type; must be one of TOKEN_USAGE, IMAGE_GENERATION, CUSTOM",
    ),
    (
        "missing_event_type",
        {k: v for k, v in token_event().items() if k != "event_type"},
        "event_type",
        "is missing; must be one of TOKEN_USAGE, IMAGE_GENERATION, CUSTOM",
    ),
    (
        "missing_customer_id",
        {k: v for k, v in token_event().items() if k != "customer_id"},
        "customer_id",
        "'customer_id' is a required property",
    ),
    (
        "naive_timestamp",
        token_event(timestamp="2026-11-22T17:00:00"),
        "timestamp",
        "'2026-11-22T17:00:00' is not a 'date-time'",
    ),
    (
        "oversize_metadata",
        token_event(metadata=_metadata_of_bytes(4098)),
        "metadata",
        "4098 bytes as compact JSON exceeds the maximum of 4096",
    ),
    ("zero_quantity", custom_event(quantity=0), "quantity", "0 is less than or equal to the minimum of 0"),
    ("zero_images", image_event(image_count=0), "image_count", "0 is less than the minimum of 1"),
    ("empty_customer_id", image_event(customer_id=""), "customer_id", "'' should be non-empty"),
    ("string_tokens", token_event(output_tokens="500"), "output_tokens", "'500' is not of type 'integer'"),
    ("boolean_tokens", token_event(output_tokens=True), "output_tokens", "True is not of type 'integer'"),
    ("beyond_int64", token_event(input_tokens=2**63), "input_tokens",  # the spec states format and maximum
     ("9223372036854775808 is not a 'int64'",
      "9223372036854775808 is greater than the maximum of 9223372036854775807")),
    ("unknown_field", token_event(colour="red"), "colour", "'colour' is not an allowed property"),
    ("not_an_object", "tok-1", "", "'tok-1' is not of type 'object'"),
]


@pytest.mark.parametrize(
    ("event", "field", "message"), [c[1:] for c in INVALID_EVENTS], ids=[c[0] for c in INVALID_EVENTS]
)
def test_an_invalid_event_refuses_the_whole_batch(
    server: LocalIngestServer, client: Client, event: Any, field: str, message: str | tuple[str, ...]
) -> None:
    response = client.post([custom_event(), event])  # the valid first event must not be stored either

    assert response.status == 400
    path = f"events[1].{field}" if field else "events[1]"
    messages = (message,) if isinstance(message, str) else message
    assert payload(response) == {
        "error": "VALIDATION_ERROR",
        "message": f"{path}: {messages[0]}",
        "details": [{"path": path, "message": m} for m in messages],
    }
    assert server.events == []


def test_metadata_limit_counts_utf8_bytes_of_compact_json(client: Client) -> None:
    assert client.post([token_event(metadata=_metadata_of_bytes(4096))]).status == 202


def test_every_problem_is_reported(client: Client) -> None:
    events = [token_event("ok"), token_event("a", input_tokens=-5, model=""), custom_event(quantity=-1)]

    response = client.post(events)

    assert response.status == 400
    assert detail_paths(response) == ["events[1].model", "events[1].input_tokens", "events[2].quantity"]


def test_details_are_capped_at_100(client: Client) -> None:
    response = client.post([token_event(f"e{i}", input_tokens=-1) for i in range(150)])

    assert response.status == 400
    paths = detail_paths(response)
    assert len(paths) == 100
    assert paths[-1] == "events[99].input_tokens"


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"events": []}, "events", "has 0 items; the minimum is 1"),
        ({"events": [custom_event(f"e{i}") for i in range(1001)]}, "events", "has 1001 items; the maximum is 1000"),
        ({}, "events", "'events' is a required property"),
        ({"events": {}}, "events", "{} is not of type 'array'"),
        ({"events": [custom_event()], "extra": 1}, "extra", "'extra' is not an allowed property"),
        ([custom_event()], "$", "is not of type 'object'"),
    ],
    ids=["empty", "1001_events", "no_events", "events_not_a_list", "extra_key", "not_an_object"],
)
def test_invalid_envelopes_are_refused(
    server: LocalIngestServer, client: Client, body: Any, path: str, message: str
) -> None:
    response = client.send(json.dumps(body).encode())

    assert response.status == 400
    details = payload(response)["details"]
    assert len(details) == 1
    assert details[0]["path"] == path
    assert details[0]["message"].endswith(message)
    assert server.events == []


def test_1000_events_are_accepted(server: LocalIngestServer, client: Client) -> None:
    response = client.post([custom_event(f"e{i}") for i in range(1000)])

    assert response.status == 202
    assert payload(response)["accepted"] == 1000
    assert len(server.event_ids) == 1000


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"events": [NaN]}', b'{"events": [1e999]}', b"\xff\xfe", b'{"events": ["\\ud800"]}'],
    ids=["empty", "truncated", "nan", "infinity", "not_utf8", "lone_surrogate"],
)
def test_malformed_json_is_refused(client: Client, body: bytes) -> None:
    response = client.send(body)

    assert response.status == 400
    assert payload(response)["error"] == "INVALID_JSON"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_refused(server: LocalIngestServer, client: Client, content_type: str | None) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if content_type is not None:
        headers["Content-Type"] = content_type

    response = client.send(json.dumps({"events": [custom_event()]}).encode(), headers=headers)

    assert response.status == 415
    assert payload(response)["error"] == "UNSUPPORTED_MEDIA_TYPE"
    assert server.events == []


def test_json_content_type_parameters_are_allowed(client: Client) -> None:
    headers = {**client.headers, "Content-Type": "application/json; charset=utf-8"}
    assert client.send(json.dumps({"events": [custom_event()]}).encode(), headers=headers).status == 202


# ------------------------------------------------------------------ authentication


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk_wrong_key_42"},
        {"Authorization": "Basic sk_wrong_key_42"},
        {"X-API-Key": "sk_wrong_key_42"},
        {"Authorization": f"Basic {API_KEY}"},
    ],
    ids=["none", "wrong_bearer", "wrong_scheme", "wrong_x_api_key", "right_key_wrong_scheme"],
)
def test_missing_or_wrong_key_is_401(server: LocalIngestServer, client: Client, headers: dict[str, str]) -> None:
    response = client.send(
        json.dumps({"events": [custom_event()]}).encode(),
        headers={"Content-Type": "application/json", **headers},
    )

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = payload(response)
    assert body["error"] == "UNAUTHORIZED"
    assert "sk_wrong_key_42" not in response.data.decode()
    assert API_KEY not in response.data.decode()
    assert server.events == []


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"bearer {API_KEY}"}, {"X-API-Key": API_KEY}], ids=["lowercase_bearer", "x_api_key"]
)
def test_key_is_accepted_in_either_header(client: Client, headers: dict[str, str]) -> None:
    body = json.dumps({"events": [custom_event()]}).encode()
    assert client.send(body, headers={"Content-Type": "application/json", **headers}).status == 202


def test_repr_does_not_reveal_the_key(server: LocalIngestServer) -> None:
    assert API_KEY not in repr(server)
    assert API_KEY not in str(server)
    assert server.api_key == API_KEY
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert repr(server) == f"<LocalIngestServer http://127.0.0.1:{server.port} running store=memory>"


# ------------------------------------------------------------------ body framing


def test_gzip_body_is_accepted(server: LocalIngestServer, client: Client) -> None:
    body = gzip.compress(json.dumps({"events": [token_event(), custom_event()]}).encode())

    response = client.send(body, headers={**client.headers, "Content-Encoding": "gzip"})

    assert response.status == 202
    assert payload(response)["accepted"] == 2
    assert len(server.events) == 2


def test_corrupt_gzip_is_refused(client: Client) -> None:
    response = client.send(b"\x1f\x8b not really gzip", headers={**client.headers, "Content-Encoding": "gzip"})

    assert response.status == 400
    assert payload(response)["error"] == "BAD_REQUEST"


def test_chunked_body_is_accepted(server: LocalIngestServer, client: Client) -> None:
    data = json.dumps({"events": [token_event()]}).encode()
    chunks = iter([data[:10], data[10:50], data[50:]])

    response = client.pool.urlopen("POST", PATH, body=chunks, headers=client.headers, chunked=True)

    assert response.status == 202
    assert server.event_ids == {"tok-1"}


@pytest.fixture
def small_server() -> Iterator[LocalIngestServer]:
    with LocalIngestServer(api_key=API_KEY, max_body_bytes=2048) as srv:
        yield srv


def test_oversize_body_is_413(small_server: LocalIngestServer) -> None:
    client = Client(small_server)

    response = client.post([custom_event(f"e{i}") for i in range(20)])

    assert response.status == 413
    assert payload(response)["error"] == "PAYLOAD_TOO_LARGE"
    assert small_server.events == []
    assert client.post([custom_event()]).status == 202  # a fresh connection works


def test_oversize_gzip_body_is_413(small_server: LocalIngestServer) -> None:
    client = Client(small_server)
    events = [custom_event(f"e{i}") for i in range(100)]
    body = gzip.compress(json.dumps({"events": events}).encode())
    assert len(body) < 2048  # small on the wire, too large once inflated

    response = client.send(body, headers={**client.headers, "Content-Encoding": "gzip"})

    assert response.status == 413
    assert payload(response)["error"] == "PAYLOAD_TOO_LARGE"


def test_oversize_chunked_body_is_413(small_server: LocalIngestServer) -> None:
    client = Client(small_server)
    chunks = iter([b" " * 1024] * 3)

    response = client.pool.urlopen("POST", PATH, body=chunks, headers=client.headers, chunked=True)

    assert response.status == 413


# ------------------------------------------------------------------ routing


def test_unknown_path_is_404(client: Client) -> None:
    response = client.send(b"{}", path="/v1/events")

    assert response.status == 404
    assert payload(response) == {"error": "NOT_FOUND", "message": "no endpoint at /v1/events"}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_405(client: Client, method: str) -> None:
    response = client.send(None, method=method)

    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert payload(response) == {"error": "METHOD_NOT_ALLOWED", "message": f"{PATH} only accepts POST"}


def test_head_is_405_without_a_body(client: Client) -> None:
    response = client.send(None, method="HEAD")

    assert response.status == 405
    assert response.data == b""


def test_query_string_is_ignored(client: Client) -> None:
    assert client.send(json.dumps({"events": [custom_event()]}).encode(), path=f"{PATH}?source=test").status == 202


# ------------------------------------------------------------------ faults


def test_fail_next_answers_the_status_with_retry_after(server: LocalIngestServer, client: Client) -> None:
    server.fail_next(2, status=503, retry_after=1.5)
    events = [token_event()]

    first, second, third = client.post(events), client.post(events), client.post(events)

    assert (first.status, second.status, third.status) == (503, 503, 202)
    assert first.headers["Retry-After"] == "1.5"
    assert payload(first) == {"error": "SERVICE_UNAVAILABLE", "message": "injected fault: 503"}
    assert server.faults_injected == 2
    assert server.request_count == 3
    assert server.event_ids == {"tok-1"}


def test_fail_next_with_a_custom_body_and_no_retry_after(server: LocalIngestServer, client: Client) -> None:
    server.fail_next(status=429, body={"error": "SLOW_DOWN", "message": "too fast"})

    response = client.post([token_event()])

    assert response.status == 429
    assert "Retry-After" not in response.headers
    assert payload(response) == {"error": "SLOW_DOWN", "message": "too fast"}
    assert server.events == []


def test_delay_next_delays_then_processes(server: LocalIngestServer, client: Client) -> None:
    server.delay_next(1, seconds=0.3)

    started = time.monotonic()
    response = client.post([token_event()])
    elapsed = time.monotonic() - started

    assert response.status == 202
    assert elapsed >= 0.25
    assert server.faults_injected == 1
    assert server.event_ids == {"tok-1"}


def test_drop_next_closes_the_connection_unanswered(server: LocalIngestServer, client: Client) -> None:
    server.drop_next()

    with pytest.raises(ProtocolError):
        client.post([token_event()])

    assert server.events == []
    assert client.post([token_event()]).status == 202  # the client reconnects
    assert server.request_count == 2
    assert server.faults_injected == 1


def test_faults_apply_in_the_order_they_were_queued(server: LocalIngestServer, client: Client) -> None:
    server.fail_next(1, status=500)
    server.drop_next()
    server.fail_next(1, status=429, retry_after=2)

    outcomes: list[int | str] = []
    for index in range(4):
        try:
            outcomes.append(client.post([custom_event(f"e{index}")]).status)
        except ProtocolError:
            outcomes.append("dropped")

    assert outcomes == [500, "dropped", 429, 202]
    assert server.event_ids == {"e3"}


def _random_fault_run(server: LocalIngestServer, requests: int) -> list[int | str]:
    client = Client(server)
    outcomes: list[int | str] = []
    for index in range(requests):
        try:
            response = client.post([custom_event(f"e{index}")])
        except ProtocolError:
            outcomes.append("dropped")
            continue
        outcomes.append(response.status)
        if response.status in (429, 503):
            assert response.headers["Retry-After"] == "0.05"
        elif response.status != 202:
            assert "Retry-After" not in response.headers
    client.pool.close()
    return outcomes


def test_random_faults_are_reproducible_with_a_seed(server: LocalIngestServer) -> None:
    server.set_fault_rate(0.5, seed=42, delay=0.01)
    first = _random_fault_run(server, 40)
    stored = len(server.events)
    injected = server.faults_injected

    server.reset()
    server.set_fault_rate(0.5, seed=42, delay=0.01)
    second = _random_fault_run(server, 40)

    assert first == second
    assert set(first) <= {202, 429, 500, 502, 503, "dropped"}
    assert {429, 500, 502, 503, "dropped"} & set(first)  # some faults ...
    assert 202 in first  # ... and some successes
    assert stored == first.count(202)
    assert server.faults_injected == injected
    assert injected >= sum(1 for outcome in first if outcome != 202)  # delays are faults too


def test_fault_rate_one_faults_every_request_and_zero_none(server: LocalIngestServer) -> None:
    server.set_fault_rate(1.0, seed=1, statuses=(500,), delay=0, drop=False)
    assert _random_fault_run(server, 5) == [500] * 5
    assert server.faults_injected == 5

    server.set_fault_rate(0)
    assert _random_fault_run(server, 3) == [202] * 3
    assert server.faults_injected == 5


def test_reset_clears_events_counters_and_faults(server: LocalIngestServer, client: Client) -> None:
    client.post([token_event()])
    server.fail_next(3)
    client.post([token_event()])
    server.set_fault_rate(1.0)

    server.reset()

    assert (server.events, server.event_ids, server.summary()) == ([], set(), [])
    assert (server.request_count, server.faults_injected) == (0, 0)
    assert client.post([token_event()]).status == 202


def test_fail_next_sends_a_raw_body_byte_for_byte(server: LocalIngestServer, client: Client) -> None:
    server.fail_next(1, status=200, raw=b"<html>maintenance</html>", content_type="text/html",
                     headers={"X-Served-By": "proxy"})

    response = client.post([token_event()])

    assert response.status == 200
    assert response.data == b"<html>maintenance</html>"
    assert response.headers["Content-Type"] == "text/html"
    assert response.headers["Content-Length"] == str(len(b"<html>maintenance</html>"))
    assert response.headers["X-Served-By"] == "proxy"
    assert server.events == []  # without store, nothing is kept
    assert client.post([token_event()]).status == 202  # the connection stays usable


def test_fail_next_sends_an_empty_body_with_no_content_type(server: LocalIngestServer, client: Client) -> None:
    server.fail_next(1, status=202, raw=b"", content_type="")

    response = client.post([token_event()])

    assert (response.status, response.data) == (202, b"")
    assert "Content-Type" not in response.headers
    assert response.headers["Content-Length"] == "0"


def test_fail_next_204_sends_no_body(server: LocalIngestServer, client: Client) -> None:
    server.fail_next(1, status=204, body={"accepted": 1, "duplicates": 0, "rejected": 0})

    response = client.post([token_event()])

    assert (response.status, response.data) == (204, b"")
    assert "Content-Length" not in response.headers
    assert client.post([token_event()]).status == 202  # framing intact on the same connection


def test_fail_next_with_store_keeps_the_batch_and_sends_the_planned_answer(
    server: LocalIngestServer, client: Client
) -> None:
    server.fail_next(1, status=500, store=True)

    assert client.post([token_event()]).status == 500
    assert server.event_ids == {"tok-1"}
    resent = client.post([token_event()])
    assert payload(resent)["duplicates"] == 1  # the resend is a duplicate


def test_fail_next_a_planned_content_length_cuts_the_answer(server: LocalIngestServer, client: Client) -> None:
    server.fail_next(1, status=202, raw=b'{"accepted": 1}', headers={"Content-Length": "100"})

    with pytest.raises(ProtocolError):  # the connection closes 85 bytes short of the announced length
        client.post([token_event()])


def _handler_threads(server: LocalIngestServer) -> list[threading.Thread]:
    httpd = server._httpd
    assert httpd is not None
    with httpd._connections_lock:
        return list(httpd._connections.values())


def _first_bytes(server: LocalIngestServer, sock: socket.socket) -> bytes:
    body = json.dumps({"events": [token_event()]}).encode()
    sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.api_key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock.recv(100)


def test_trickle_next_writes_the_answer_a_byte_at_a_time_and_stops_when_the_client_goes(
    server: LocalIngestServer,
) -> None:
    server.fail_next(1, status=202, raw=b" " * 1000, store=True)
    server.trickle_next(1, interval=0.2)  # 1000+ bytes: minutes

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        first = _first_bytes(server, sock)
        (handler,) = _handler_threads(server)
    assert first == b"H"  # the status line too comes a byte at a time
    assert server.event_ids == {"tok-1"}  # stored before the answer began

    handler.join(30)  # the client is gone: the next writes fail and the handler ends
    assert not handler.is_alive()


def test_trickle_next_does_not_hold_up_stop(server: LocalIngestServer) -> None:
    server.trickle_next(1, interval=3600, store=False)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        assert _first_bytes(server, sock) == b"H"
        (handler,) = _handler_threads(server)
        server.stop()
        assert not handler.is_alive()
    assert server.events == []  # store=False: a 503 was trickled, nothing kept


def test_trickle_next_paces_the_real_answer_which_arrives_whole(server: LocalIngestServer, client: Client) -> None:
    server.trickle_next(1, interval=0.001)

    response = client.post([token_event()])

    assert response.status == 202 and payload(response)["accepted"] == 1
    assert client.post([token_event()]).status == 200  # keep-alive survives a trickled answer


def test_fault_arguments_are_checked(server: LocalIngestServer) -> None:
    with pytest.raises(ValueError):
        server.fail_next(status=199)
    with pytest.raises(ValueError):
        server.fail_next(status=600)
    with pytest.raises(ValueError):
        server.fail_next(status=200, body={}, raw=b"")
    with pytest.raises(ValueError):
        server.trickle_next(interval=0)
    with pytest.raises(ValueError):
        server.fail_next(-1)
    with pytest.raises(ValueError):
        server.delay_next(seconds=-1)
    with pytest.raises(ValueError):
        server.set_fault_rate(1.5)
    with pytest.raises(ValueError):
        server.set_fault_rate(0.5, statuses=(), delay=0, drop=False)


# ------------------------------------------------------------------ storage and lifecycle


def test_sqlite_keeps_events_and_dedup_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    events = [token_event(), image_event(), custom_event()]
    with LocalIngestServer(api_key=API_KEY, db_path=db) as first:
        assert Client(first).post(events).status == 202
    assert first.events == events  # a stopped server can still be inspected

    with LocalIngestServer(api_key=API_KEY, db_path=db) as second:
        client = Client(second)
        resent = client.post(events)
        assert resent.status == 200
        assert (payload(resent)["accepted"], payload(resent)["duplicates"]) == (0, 3)
        assert client.post([token_event("tok-2"), token_event("tok-1")]).status == 202
        assert second.events == [*events, token_event("tok-2")]
        assert second.event_ids == {"tok-1", "img-1", "cus-1", "tok-2"}
        summary = [(row["feature_id"], row["events"], row["input_tokens"]) for row in second.summary()]
        assert summary == [("avatars", 1, 0), ("chat", 2, 2000), ("pdf", 1, 0)]


def test_sqlite_reset_empties_the_table(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with LocalIngestServer(api_key=API_KEY, db_path=db) as server:
        Client(server).post([token_event()])
        server.reset()
        assert server.events == []
    with LocalIngestServer(api_key=API_KEY, db_path=db) as server:
        assert Client(server).post([token_event()]).status == 202


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_summary_totals(tmp_path: Path, storage: str) -> None:
    db_path = tmp_path / "events.db" if storage == "sqlite" else None
    events = [
        token_event("t1", cached_input_tokens=100, reasoning_tokens=50),
        token_event("t2", input_tokens=10, output_tokens=20),
        token_event("t3", model="gpt-4o-mini", input_tokens=7, output_tokens=3),
        token_event("t4", customer_id="cust_xyz"),
        image_event("i1"),
        image_event("i2", image_count=3),
        custom_event("c1", quantity=2.5),
        custom_event("c2", quantity=0.25),
        custom_event("c3", unit_type="seconds", quantity=60),
    ]
    with LocalIngestServer(api_key=API_KEY, db_path=db_path) as server:
        assert Client(server).post(events).status == 202
        summary = server.summary()

    def row(customer: str, feature: str, model: str | None, unit: str | None, **totals: Any) -> dict[str, Any]:
        zero = dict.fromkeys(
            ["input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "image_count"], 0
        )
        return {
            "customer_id": customer,
            "feature_id": feature,
            "model": model,
            "unit_type": unit,
            **zero,
            "quantity": 0.0,
            **totals,
        }

    assert summary == [
        row("cust_abc", "avatars", "dall-e-3", None, events=2, image_count=5),
        row("cust_abc", "chat", "gpt-4o", None, events=2, input_tokens=1010, output_tokens=520,
            cached_input_tokens=100, reasoning_tokens=50),
        row("cust_abc", "chat", "gpt-4o-mini", None, events=1, input_tokens=7, output_tokens=3),
        row("cust_abc", "pdf", None, "pages", events=2, quantity=2.75),
        row("cust_abc", "pdf", None, "seconds", events=1, quantity=60.0),
        row("cust_xyz", "chat", "gpt-4o", None, events=1, input_tokens=1000, output_tokens=500),
    ]  # fmt: skip


def test_start_and_stop_are_idempotent_and_restartable() -> None:
    server = LocalIngestServer(api_key=API_KEY)
    with pytest.raises(RuntimeError):
        _ = server.url
    assert server.start() is server
    assert server.start() is server
    url = server.url
    assert Client(server).post([token_event()]).status == 202
    server.stop()
    server.stop()
    assert not server.running

    server.start()
    try:
        assert Client(server).post([token_event()]).status == 200  # memory store survives a restart
        assert server.url.startswith("http://127.0.0.1:")
        assert url.startswith("http://127.0.0.1:")
    finally:
        server.stop()


def test_stop_closes_kept_alive_connections_and_threads() -> None:
    before = set(threading.enumerate())
    server = LocalIngestServer(api_key=API_KEY).start()
    client = Client(server)
    assert client.post([token_event()]).status == 202  # leaves an idle keep-alive connection

    server.stop()

    assert set(threading.enumerate()) - before == set()
    with pytest.raises(HTTPError):  # a connection refused, whichever way urllib3 reports it
        client.post([token_event("after-stop")])
    client.pool.close()


def test_pytest_fixture_serves_requests(local_ingest_server: LocalIngestServer) -> None:
    assert local_ingest_server.running
    assert local_ingest_server.api_key == "test-key"

    response = Client(local_ingest_server).post([custom_event()])

    assert response.status == 202
    assert local_ingest_server.event_ids == {"cus-1"}
