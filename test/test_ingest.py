"""EventsApi.ingest against a real LocalIngestServer over loopback."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import API_KEY
from pydantic import ValidationError

from openmonetize import (
    ApiClient,
    CustomEvent,
    ErrorResponse,
    EventsApi,
    ImageGenerationEvent,
    IngestResponse,
    TokenUsageEvent,
)
from openmonetize.configuration import Configuration
from openmonetize.exceptions import (
    ApiException,
    BadRequestException,
    ForbiddenException,
    ServiceException,
    UnauthorizedException,
)
from openmonetize.models.event import Event
from openmonetize.models.ingest_request import IngestRequest
from openmonetize.testing import LocalIngestServer


def token_event(**overrides: Any) -> TokenUsageEvent:
    fields: dict[str, Any] = dict(customer_id="cust_abc", user_id="user_456", feature_id="chat-completion",
                                  provider="openai", model="gpt-4-turbo", input_tokens=1000, output_tokens=500)
    return TokenUsageEvent(**{**fields, **overrides})


def image_event(**overrides: Any) -> ImageGenerationEvent:
    fields: dict[str, Any] = dict(customer_id="cust_abc", feature_id="image-gen", provider="openai", model="dall-e-3",
                  image_count=2, image_size="1024x1024", quality="hd")
    return ImageGenerationEvent(**{**fields, **overrides})


def custom_event(**overrides: Any) -> CustomEvent:
    fields: dict[str, Any] = dict(customer_id="cust_xyz", feature_id="pdf-processing", unit_type="pages", quantity=10)
    return CustomEvent(**{**fields, **overrides})


def test_each_event_type_is_accepted_with_exact_fields(events_api, server):
    token = token_event(cached_input_tokens=200, reasoning_tokens=100, metadata={"region": "eu", "retry": 0})
    image, custom = image_event(), custom_event(quantity=2.5, team_id="team_1")
    response = events_api.ingest(events=[token])
    assert isinstance(response, IngestResponse)
    assert (response.accepted, response.duplicates, response.rejected) == (1, 0, 0)
    assert response.batch_id
    assert events_api.ingest(events=[image]).accepted == 1
    assert events_api.ingest(events=[custom]).accepted == 1

    stored = {e["event_id"]: e for e in server.events}
    assert stored[token.event_id] == {
        "event_type": "TOKEN_USAGE", "event_id": token.event_id, "customer_id": "cust_abc", "user_id": "user_456",
        "feature_id": "chat-completion", "timestamp": token.timestamp.isoformat().replace("+00:00", "Z"),
        "provider": "openai",
        "model": "gpt-4-turbo", "input_tokens": 1000, "output_tokens": 500, "cached_input_tokens": 200,
        "reasoning_tokens": 100, "metadata": {"region": "eu", "retry": 0},
    }
    assert stored[image.event_id]["image_count"] == 2 and stored[image.event_id]["quality"] == "hd"
    assert stored[custom.event_id]["quantity"] == 2.5 and stored[custom.event_id]["team_id"] == "team_1"
    assert "user_id" not in stored[custom.event_id]  # unset optionals are omitted, never sent as null


def test_mixed_batch_keeps_order_and_ids(events_api, server):
    batch: list[Event] = [token_event(), image_event(), custom_event(), token_event(model="gpt-4o"), custom_event()]
    response = events_api.ingest(events=batch)
    assert response.accepted == 5
    assert [e["event_id"] for e in server.events] == [e.event_id for e in batch]
    assert [e["event_type"] for e in server.events] == [
        "TOKEN_USAGE", "IMAGE_GENERATION", "CUSTOM", "TOKEN_USAGE", "CUSTOM"]


def test_resend_is_deduplicated_by_event_id(events_api, server):
    batch = [token_event(), custom_event()]
    assert events_api.ingest(events=batch).accepted == 2
    again = events_api.ingest(events=[*batch, image_event()])
    assert (again.accepted, again.duplicates) == (1, 2)
    info = events_api.ingest_with_http_info(events=batch)
    assert info.status_code == 200 and info.data.duplicates == 2 and info.data.accepted == 0
    assert len(server.events) == 3


def test_dicts_are_validated_and_sent_never_as_null(events_api, server):
    as_dict = {"event_type": "CUSTOM", "customer_id": "c1", "feature_id": "f", "unit_type": "calls", "quantity": 1}
    response = events_api.ingest(events=[as_dict, token_event()])
    assert response.accepted == 2
    first = server.events[0]
    assert first["event_type"] == "CUSTOM" and first["unit_type"] == "calls"
    assert first["event_id"] == as_dict["event_id"]  # assigned once, kept in the dict
    # the same dict sent again is the same event
    assert events_api.ingest(events=[as_dict]).duplicates == 1


@pytest.mark.parametrize(("bad", "message"), [
    ({"event_type": "VIDEO", "customer_id": "c", "feature_id": "f"},
     "Input tag 'VIDEO' found using 'event_type' does not match any of the expected tags"),
    ({"customer_id": "c", "feature_id": "f"}, "Unable to extract tag using discriminator 'event_type'"),
    ({"event_type": "CUSTOM", "customer_id": "c", "feature_id": "f", "unit_type": "x", "quantity": -1},
     "greater than 0"),
    (None, r"events.1\n  Input should be a valid dictionary .* \[type=model_attributes_type, input_value=None"),
    ("evt", r"events.1\n  Input should be a valid dictionary .* \[type=model_attributes_type, input_value='evt'"),
])
def test_bad_dicts_are_refused_before_sending(events_api, server, bad, message):
    with pytest.raises(ValidationError, match=message):
        events_api.ingest(events=[token_event(), bad])
    assert server.request_count == 0


def test_more_than_1000_events_are_refused_before_anything_is_sent(events_api, server):
    events = [custom_event() for _ in range(1001)]
    with pytest.raises(ValidationError, match="at most 1000 items"):
        events_api.ingest(events=events)
    with pytest.raises(ValidationError, match="at least 1 item"):
        events_api.ingest(events=[])
    assert server.request_count == 0
    assert events_api.ingest(events=events[:1000]).accepted == 1000


def test_wire_json_is_what_the_generic_serializer_would_send(events_api, server):
    events: list[Event] = [token_event(metadata={"nested": {"a": [1, None, "x"]}, "none": None}), image_event(),
              custom_event(quantity=0.25), custom_event(quantity=7, timestamp="2026-01-01T00:00:00-03:30")]
    events_api.ingest(events=events)
    generic = ApiClient().sanitize_for_serialization(IngestRequest(events=events))
    assert server.events == generic["events"]


def test_server_validation_is_independent_of_the_client(events_api):
    # model_construct skips client validation: the server's own check of openapi.yaml must catch it
    forged = TokenUsageEvent.model_construct(
        event_type="TOKEN_USAGE", event_id="evt_forged", customer_id="c", feature_id="f", provider="p",
        model="m", input_tokens=-3, output_tokens=1, timestamp=datetime.now(timezone.utc))
    with pytest.raises(BadRequestException) as exc:
        events_api.ingest(events=[forged])
    error = exc.value
    assert error.status == 400
    assert isinstance(error.data, ErrorResponse)
    assert error.data.error == "VALIDATION_ERROR"
    assert any(d.path == "events[0].input_tokens" for d in error.data.details or [])


@pytest.mark.parametrize(("status", "exc_type"), [
    (400, BadRequestException),
    (401, UnauthorizedException),
    (402, ApiException),
    (403, ForbiddenException),
    (413, ApiException),
    (429, ApiException),
    (500, ServiceException),
    (503, ServiceException),
])
def test_error_statuses_raise_typed_exceptions_with_the_server_body(events_api, server, status, exc_type):
    server.fail_next(1, status=status, retry_after=7 if status in (429, 503) else None)
    event = custom_event()
    with pytest.raises(exc_type) as exc:
        events_api.ingest(events=[event])
    error = exc.value
    assert error.status == status
    assert isinstance(error.data, ErrorResponse) and error.data.error
    assert json.loads(error.body)["error"] == error.data.error
    if status in (429, 503):
        assert error.headers["Retry-After"] == "7"
    assert API_KEY not in str(error)
    assert event.event_id not in server.event_ids
    # the same event goes through once the fault is gone
    assert events_api.ingest(events=[event]).accepted == 1


def test_wrong_key_is_unauthorized_and_the_key_is_not_echoed(server):
    config = Configuration(host=server.url)
    config.api_key["bearerAuth"] = "sk_wrong_key_value"
    with ApiClient(config) as client, pytest.raises(UnauthorizedException) as exc:
        EventsApi(client).ingest(events=[custom_event()])
    assert "sk_wrong_key_value" not in str(exc.value)
    assert server.events == []


def test_access_token_also_works(server):
    config = Configuration(host=server.url, access_token=API_KEY)
    with ApiClient(config) as client:
        assert EventsApi(client).ingest(events=[custom_event()]).accepted == 1


def test_local_server_fixture_from_the_pytest_plugin(local_ingest_server):
    config = Configuration(host=local_ingest_server.url)
    config.api_key["bearerAuth"] = local_ingest_server.api_key
    with ApiClient(config) as client:
        assert EventsApi(client).ingest(events=[custom_event()]).accepted == 1
    assert len(local_ingest_server.events) == 1


def test_requests_reuse_one_keep_alive_connection(events_api, server: LocalIngestServer):
    for _ in range(5):
        events_api.ingest(events=[custom_event()])
    pool = events_api.api_client.rest_client.pool_manager.connection_from_url(server.url)
    assert pool.num_connections == 1
    assert pool.num_requests == 5


def test_errors_is_an_empty_list_when_the_service_omits_it():
    """The reference page shows `[]`; callers may iterate `errors` without a None check."""
    from_dict = IngestResponse.from_dict({"accepted": 1, "duplicates": 0, "rejected": 0})
    from_json = IngestResponse.from_json('{"accepted": 1, "duplicates": 0, "rejected": 0}')
    assert from_dict is not None and from_dict.errors == []
    assert from_json is not None and from_json.errors == []
    assert IngestResponse(accepted=1, duplicates=0, rejected=0).errors == []
