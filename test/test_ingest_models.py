"""`EventsApi.ingest` with lists of prebuilt event models: taken as they are (no second validation, issue 14),
with the same bytes, errors and ids as a list of dicts, against a real LocalIngestServer over loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import API_KEY
from pydantic import ValidationError
from test_ingest import custom_event, image_event, token_event

from openmonetize import AsyncApiClient, AsyncEventsApi, EventsApi, TokenUsageEvent
from openmonetize.configuration import Configuration
from openmonetize.lib.body_items import as_they_are, members_of
from openmonetize.models.event import Event
from openmonetize.testing import LocalIngestServer


def record_bodies(api: EventsApi) -> list[bytes]:
    """The request bodies the real transport is given (and sends), in order."""
    bodies: list[bytes] = []
    rest = api.api_client.rest_client
    send = rest.request

    def request(method: str, url: str, headers: Any = None, body: Any = None, **kwargs: Any) -> Any:
        bodies.append(body)
        return send(method, url, headers=headers, body=body, **kwargs)

    rest.request = request
    return bodies


def batch() -> list[Any]:
    return [token_event(cached_input_tokens=10, metadata={"k": [1, None, "é"], "n": None}), image_event(),
            custom_event(quantity=2.5, timestamp="2026-01-01T00:00:00-03:30"), custom_event(quantity=7)]


def test_a_batch_of_models_and_the_same_batch_as_dicts_send_the_same_bytes(events_api, server):
    bodies = record_bodies(events_api)
    models = batch()
    dicts = [m.model_dump() for m in models]  # every field, None ones too, as a caller's dicts may hold them
    assert events_api.ingest(events=models).accepted == 4
    assert events_api.ingest(events=dicts).duplicates == 4  # the same ids: the same events
    assert len(bodies) == 2 and isinstance(bodies[0], bytes)
    assert bodies[0] == bodies[1]
    assert [e["event_id"] for e in server.events] == [m.event_id for m in models]


def test_a_model_changed_after_it_was_built_sends_what_it_holds(events_api, server):
    event = token_event()
    event.input_tokens = 4242  # validated on assignment (the models validate assignments)
    event.metadata = {"edited": True}
    with pytest.raises(ValidationError, match="input_tokens"):
        event.input_tokens = -1  # refused: the model keeps what it held
    assert events_api.ingest(events=[event]).accepted == 1
    stored = server.events[0]
    assert stored["input_tokens"] == 4242 and stored["metadata"] == {"edited": True}


def test_a_mixed_list_validates_the_dicts_and_gives_them_their_ids_in_place(events_api, server):
    as_dict: dict[str, Any] = {"event_type": "CUSTOM", "customer_id": "c1", "feature_id": "f", "unit_type": "calls",
                               "quantity": 1}
    events: list[Any] = [token_event(), as_dict, image_event()]
    assert events_api.ingest(events=events).accepted == 3
    assert events[1] is as_dict and "event_id" in as_dict  # the caller's list and dict, the id kept in the dict
    assert [e["event_id"] for e in server.events] == [events[0].event_id, as_dict["event_id"], events[2].event_id]
    assert events_api.ingest(events=[as_dict]).duplicates == 1  # sent again: the same event, never a new id


def test_a_bad_dict_among_models_is_refused_naming_its_field_before_anything_is_sent(events_api, server):
    bad = {"event_type": "TOKEN_USAGE", "customer_id": "c", "feature_id": "f", "provider": "p", "model": "m",
           "input_tokens": -1, "output_tokens": 1}
    events: list[Any] = [token_event() for _ in range(999)] + [bad]
    with pytest.raises(ValidationError) as exc:
        events_api.ingest(events=events)
    (error,) = exc.value.errors()
    assert error["loc"] == ("events", 999, "TOKEN_USAGE", "input_tokens") and error["input"] == -1
    assert "greater than or equal to 0" in error["msg"]
    assert server.request_count == 0


def test_length_limits_hold_for_lists_of_models(events_api, server):
    with pytest.raises(ValidationError, match=r"at most 1000 items after validation, not 1001"):
        events_api.ingest(events=[custom_event() for _ in range(1001)])
    with pytest.raises(ValidationError, match="at least 1 item after validation, not 0"):
        events_api.ingest(events=[])
    assert server.request_count == 0


def test_the_async_twin_takes_models_as_they_are_and_still_validates_dicts(server: LocalIngestServer):
    config = Configuration(host=server.url)
    config.api_key["bearerAuth"] = API_KEY
    models = batch()

    async def main() -> tuple[int, int]:
        async with AsyncApiClient(config) as client:
            api = AsyncEventsApi(client)
            first = await api.ingest(events=models)
            with pytest.raises(ValidationError, match="input_tokens"):
                await api.ingest(events=[*models, {**models[0].model_dump(), "input_tokens": -1}])
            again = await api.ingest(events=[m.model_dump() for m in models])
            return first.accepted, again.duplicates

    assert asyncio.run(main()) == (4, 4)
    assert server.request_count == 2


def test_the_hook_passes_a_copy_of_an_all_model_list_and_validates_anything_else():
    validate: Any = as_they_are(Event).func
    assert set(members_of(Event)) == {type(e) for e in batch()}
    seen: list[Any] = []

    def handler(value: Any) -> Any:
        seen.append(value)
        return "validated"

    models = batch()
    passed = validate(models, handler)
    assert passed == models and passed is not models and seen == []
    assert validate([], handler) == []  # the length limit after the hook refuses it
    subclass: Any = type("Sub", (TokenUsageEvent,), {})
    for other in ([*models, {"event_type": "CUSTOM"}], tuple(models), [*models, None],
                  [subclass.model_construct(**dict(models[0]))]):
        assert validate(other, handler) == "validated"
    assert len(seen) == 4
