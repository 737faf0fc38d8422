"""2xx answers that break the contract raise InvalidResponseError (status, headers, raw body, the rule broken);
error answers keep their class whatever their body. Over loopback against LocalIngestServer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import API_KEY
from pydantic import ValidationError

from openmonetize import ApiClient, CustomEvent, EventsApi, IngestResponse
from openmonetize.configuration import Configuration
from openmonetize.exceptions import ApiException, BadRequestException, InvalidResponseError, ServiceException
from openmonetize.models.error_response import ErrorResponse
from openmonetize.testing import LocalIngestServer


def event(n: int = 0) -> CustomEvent:
    return CustomEvent(customer_id="cust", feature_id="f", unit_type="pages", quantity=n + 1)


def serialized(*events: CustomEvent) -> bytes:
    """A request body as background delivery sends it."""
    return b'{"events":[' + b",".join(e.model_dump_json(exclude_none=True).encode() for e in events) + b"]}"


@pytest.fixture
def api(server: LocalIngestServer) -> Iterator[EventsApi]:
    """The client as background delivery configures it: urllib3 retries nothing."""
    config = Configuration(host=server.url, access_token=API_KEY)
    config.retries = False
    config.max_retries = 0
    with ApiClient(config) as client:
        yield EventsApi(client)


def assert_no_key(error: BaseException) -> None:
    for text in (str(error), repr(error)):
        assert API_KEY not in text


# ------------------------------------------------------------------ 2xx answers that break the contract

VALID = {"accepted": 1, "duplicates": 0, "rejected": 0}

MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("empty body", dict(status=200, raw=b"")),
    ("html", dict(status=200, raw=b"<html><body>maintenance</body></html>", content_type="text/html")),
    ("not json", dict(status=202, raw=b"accepted=1")),
    ("truncated json", dict(status=202, raw=b'{"accepted": 1, "dupl')),
    ("not utf-8", dict(status=202, raw=b'{"accepted": "\xff\xfe"}')),
    ("unknown charset", dict(status=202, raw=json.dumps(VALID).encode(),
                             content_type="application/json; charset=nope")),
    ("json list", dict(status=202, raw=b"[]")),
    ("json string", dict(status=202, raw=b'"ok"')),
    ("json null", dict(status=202, raw=b"null")),
    ("empty object", dict(status=202, raw=b"{}")),
    ("count missing", dict(status=202, body={"accepted": 1, "duplicates": 0})),
    ("count null", dict(status=202, body={**VALID, "rejected": None})),
    ("count string", dict(status=202, body={**VALID, "accepted": "1"})),
    ("count float", dict(status=202, body={**VALID, "accepted": 1.0})),
    ("count boolean", dict(status=202, body={**VALID, "accepted": True})),
    ("count negative", dict(status=202, body={"accepted": 2, "duplicates": -1, "rejected": 0})),
    ("error entry malformed", dict(status=202, body={"accepted": 0, "duplicates": 0, "rejected": 1,
                                                      "errors": [{"index": "0", "code": "X", "message": "m"}]})),
    ("status 204", dict(status=204)),
    ("status 201", dict(status=201, body=VALID)),
    ("status 203", dict(status=203, body=VALID)),
    ("too many counted", dict(status=202, body={"accepted": 1, "duplicates": 1, "rejected": 0})),
    ("too few counted", dict(status=202, body={"accepted": 0, "duplicates": 0, "rejected": 0})),
    ("rejected without errors", dict(status=202, body={"accepted": 0, "duplicates": 0, "rejected": 1})),
    ("errors without rejected", dict(status=202, body={"accepted": 1, "duplicates": 0, "rejected": 0,
                                                        "errors": [{"index": 0, "code": "X", "message": "m"}]})),
    ("error index out of range", dict(status=202, body={"accepted": 0, "duplicates": 0, "rejected": 1,
                                                         "errors": [{"index": 1, "code": "X", "message": "m"}]})),
]


def sent_body(plan: dict[str, Any]) -> bytes:
    if "raw" in plan:
        raw: bytes = plan["raw"]
        return raw
    if plan["status"] == 204:
        return b""
    return json.dumps(plan["body"]).encode()


@pytest.mark.parametrize(("case", "plan"), MALFORMED, ids=[case for case, _ in MALFORMED])
def test_a_2xx_that_breaks_the_contract_raises_invalid_response_error(api, server, case, plan):
    server.fail_next(1, **plan, headers={"X-Trace": "t-1"}, store=True)

    with pytest.raises(InvalidResponseError) as caught:
        api.ingest(events=[event()])

    error = caught.value
    assert isinstance(error, ApiException)
    assert error.status == plan["status"]
    assert error.headers["X-Trace"] == "t-1"
    assert error.body == sent_body(plan)
    assert isinstance(error.reason, str) and error.reason
    assert not isinstance(error.__cause__, ApiException)  # the parse error, if any, is only chained
    assert_no_key(error)


def test_the_accounting_rule_counts_every_event_of_the_batch(api, server):
    errors = [{"index": 2, "code": "X", "message": "m"}, {"index": 2, "code": "Y", "message": "m"}]
    server.fail_next(1, status=202, body={"accepted": 1, "duplicates": 0, "rejected": 2, "errors": errors})
    with pytest.raises(InvalidResponseError, match="more than once"):
        api.ingest(events=[event(0), event(1), event(2)])

    ok = [{"index": 0, "code": "X", "message": "m"}, {"index": 2, "code": "Y", "message": "m"}]
    server.fail_next(1, status=202, body={"accepted": 0, "duplicates": 1, "rejected": 2, "errors": ok})
    answer = api.ingest(events=[event(0), event(1), event(2)])
    assert (answer.accepted, answer.duplicates, answer.rejected) == (0, 1, 2)


def test_with_http_info_checks_the_answer_too(api, server):
    server.fail_next(1, status=202, body={"accepted": 5, "duplicates": 0, "rejected": 0})
    with pytest.raises(InvalidResponseError, match="5 \\+ 0 \\+ 0 = 5, but 1 event was sent"):
        api.ingest_with_http_info(events=[event()])


def test_ingest_serialized_checks_the_shape_and_with_a_count_the_accounting(api, server):
    body = serialized(event())
    wrong_count = {"accepted": 3, "duplicates": 0, "rejected": 0}

    server.fail_next(1, status=202, raw=b"<html></html>", content_type="text/html")
    with pytest.raises(InvalidResponseError):
        api.ingest_serialized(body)

    server.fail_next(1, status=202, body=wrong_count)
    assert api.ingest_serialized(body).accepted == 3  # no count given: only the shape is checked

    server.fail_next(1, status=202, body=wrong_count)
    with pytest.raises(InvalidResponseError) as caught:
        api.ingest_serialized(body, _event_count=1)
    assert isinstance(caught.value.data, IngestResponse)  # what the server claimed, for diagnosis
    assert api.ingest_serialized(body, _event_count=1).accepted == 1


def test_a_broken_2xx_for_stored_events_is_safe_to_resend(api, server):
    events = [event(0), event(1)]
    server.fail_next(1, status=200, raw=b"", store=True)
    with pytest.raises(InvalidResponseError):
        api.ingest(events=events)
    assert server.event_ids == {e.event_id for e in events}

    answer = api.ingest(events=events)
    assert (answer.accepted, answer.duplicates) == (0, 2)


@pytest.mark.parametrize(("plan", "exc_type", "parsed"), [
    (dict(status=500, raw=b"<html>oops</html>", content_type="text/html"), ServiceException, False),
    (dict(status=503, raw=b"[1, 2]"), ServiceException, False),
    (dict(status=400, raw=b"\xff\xfe", content_type="application/json"), BadRequestException, False),
    (dict(status=400, raw=b'{"error": "VALIDATION_ERROR"'), BadRequestException, False),
    (dict(status=400, body={"error": "VALIDATION_ERROR", "message": "bad"}), BadRequestException, True),
    (dict(status=429, raw=b""), ApiException, False),
])
def test_error_answers_keep_their_class_whatever_their_body(api, server, plan, exc_type, parsed):
    server.fail_next(1, **plan)
    with pytest.raises(ApiException) as caught:
        api.ingest(events=[event()])
    error = caught.value
    assert type(error) is exc_type
    assert error.status == plan["status"]
    assert isinstance(error.data, ErrorResponse) if parsed else error.data is None


def test_no_parse_error_ever_leaks(api, server):
    """The generic parse errors the stock client let through are gone, whatever the 2xx body."""
    for raw in (b"", b"{", b"[]", b"null", b"0", b"\xff", b"{}"):
        server.fail_next(1, status=202, raw=raw)
        with pytest.raises(InvalidResponseError) as caught:
            api.ingest(events=[event()])
        assert not isinstance(caught.value, (ValidationError, json.JSONDecodeError, UnicodeDecodeError))
