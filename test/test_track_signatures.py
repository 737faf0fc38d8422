"""The `track_*` keyword methods restate their model's fields by hand (for typed, documented keywords
and a fast hot path): these tests hold them to the generated models, so a field added, removed or
renamed in openapi.yaml fails here until the method follows. New event types need no method:
`OpenMonetize.track(event)` takes any member of the generated `Event` union."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import BaseModel

from openmonetize import OpenMonetize
from openmonetize.lib.event_types import EVENT_MODELS, MODELS_BY_TYPE
from openmonetize.models import CustomEvent, ImageGenerationEvent, TokenUsageEvent
from openmonetize.testing import LocalIngestServer

METHODS: dict[str, type[BaseModel]] = {
    "track_token_usage": TokenUsageEvent,
    "track_image_generation": ImageGenerationEvent,
    "track_custom_event": CustomEvent,
}
# required by the spec, optional in every method: the models fill them in (the spec's `x-sdk-default`)
SDK_FILLED = {"event_id", "timestamp"}
# required by the spec, defaulted by one method as a convenience
CONVENIENCE_DEFAULTS = {("track_image_generation", "image_count"): 1}
# a valid value for each field, distinct per field, to see each keyword reach the sent event
VALUES: dict[str, Any] = {
    "event_id": "evt-sig-1", "customer_id": "cust_sig", "user_id": "user_sig", "team_id": "team_sig",
    "feature_id": "feat_sig", "timestamp": "2026-11-22T17:00:00Z", "metadata": {"k": "v"},
    "provider": "prov_sig", "model": "model_sig", "input_tokens": 11, "output_tokens": 7,
    "cached_input_tokens": 3, "reasoning_tokens": 2, "image_count": 4, "image_size": "512x512", "quality": "hd",
    "unit_type": "pages", "quantity": 2.5,
}


def test_the_event_types_are_the_generated_unions_members() -> None:
    assert set(MODELS_BY_TYPE) == {"TOKEN_USAGE", "IMAGE_GENERATION", "CUSTOM"}
    assert all(MODELS_BY_TYPE[model.model_fields["event_type"].default] is model for model in EVENT_MODELS)


@pytest.mark.parametrize("method", METHODS)
def test_track_method_takes_exactly_its_models_fields(method: str) -> None:
    model = METHODS[method]
    parameters = dict(inspect.signature(getattr(OpenMonetize, method)).parameters)
    parameters.pop("self")
    fields = {name: info for name, info in model.model_fields.items() if name != "event_type"}
    assert set(parameters) == set(fields), (
        f"{method} drifted from {model.__name__}: missing {sorted(set(fields) - set(parameters))}, "
        f"not in the model {sorted(set(parameters) - set(fields))}")
    for name, parameter in parameters.items():
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, f"{method}({name}) must be keyword-only"
        if (method, name) in CONVENIENCE_DEFAULTS:
            assert parameter.default == CONVENIENCE_DEFAULTS[method, name]
        elif fields[name].is_required() and name not in SDK_FILLED:
            assert parameter.default is inspect.Parameter.empty, f"{method}({name}) is required by the spec"
        else:
            assert parameter.default is None, f"{method}({name}) is optional in the spec: default None"


@pytest.mark.parametrize("method", METHODS)
def test_track_method_sends_every_keyword_it_takes(method: str) -> None:
    model = METHODS[method]
    names = [name for name in inspect.signature(getattr(OpenMonetize, method)).parameters if name != "self"]
    missing = [name for name in names if name not in VALUES]
    assert not missing, f"add a valid value for {missing} to VALUES"
    kwargs = {name: VALUES[name] for name in names}
    expected = model(**kwargs).model_dump(mode="json", exclude_none=True)
    with LocalIngestServer() as server:
        client = OpenMonetize(api_key=server.api_key, base_url=server.url)
        try:
            getattr(client, method)(**kwargs)
            assert client.flush(timeout=30)
        finally:
            client.shutdown()
        [sent] = server.events
    assert {key: sent[key] for key in expected} == expected
    assert set(sent) >= set(expected)
