"""The ingest body by orjson (`lib/body_json.py`, the `orjson` extra) against pydantic's (issue 14).

What the property test pins: for any list of event models, valid ones of all three types with random
values (full Unicode text, int64 bounds, any positive float, timestamps at any offset, nested metadata)
and the instances users make without validation (`model_construct`, `model_copy(update=...)`, a field
deleted and set again, a subclass), whenever orjson's path answers, its body is **byte-identical** to
pydantic's, floats included (no case is only value-equal); when it does not answer, pydantic writes the
whole body. Other tests show the common case does take orjson's path, that with orjson switched off
(the module's switch, as when the extra is not installed) pydantic writes every body, and that the same
events reach a LocalIngestServer over loopback either way.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from openmonetize import ApiClient, EventsApi
from openmonetize.configuration import Configuration
from openmonetize.lib import body_json
from openmonetize.lib.event_types import EVENT_MODELS
from openmonetize.models import CustomEvent, ImageGenerationEvent, TokenUsageEvent
from openmonetize.models.ingest_request import IngestRequest
from openmonetize.testing import LocalIngestServer

INT64_MAX = 2**63 - 1
# 250 and 100 examples per run keep the file near 5 s of the suite's 5-minute budget (20,000 ran clean once)
SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class Color(enum.Enum):
    RED = "red"


class SubEvent(TokenUsageEvent):
    pass


class StrSubclass(str):
    pass


def pydantic_body(events: list[Any]) -> bytes:
    request = IngestRequest.model_construct(events=events)
    return request.__pydantic_serializer__.to_json(request, by_alias=True, exclude_none=True)


def orjson_body(events: list[Any]) -> bytes | None:
    """orjson's answer alone (None: it leaves the body to pydantic)."""
    assert body_json._encoder() is orjson
    return body_json._ingest_request(IngestRequest.model_construct(events=events))


# --- values -----------------------------------------------------------------------------------------------

# every code point but surrogates (the models refuse text that is not UTF-8): controls, U+2028, astral ones
any_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
edge_text = st.sampled_from(["x\x00\x1f\x7f\"\\/\u2028\u2029", "é😀", "a" * 64, " ", "\b\f\n\r\t"])
texts = st.one_of(any_text, edge_text)
counts = st.one_of(st.integers(0, INT64_MAX), st.sampled_from([0, 1, INT64_MAX]))
offsets = st.one_of(
    st.just(dt.timezone.utc),
    st.timedeltas(min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23, minutes=59))
    .map(dt.timezone),  # seconds and microseconds in the offset too
    st.timezones(),
)
timestamps = st.one_of(
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=offsets),
    st.datetimes(min_value=dt.datetime(1971, 1, 2), max_value=dt.datetime(2100, 1, 1)),  # naive: local time
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456+05:45", "2026-01-01T00:00:00",
                     "2026-01-01T00:00:00.5+00:00", "2026-01-01T00:00:00-00:00"]),
)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), texts,
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.sampled_from([INT64_MAX + 1, 2**64 - 1, -(2**63), 1e-05, 1e16, 5e-324, -0.0]))
# what only `model_construct` can put in an event (validation refuses it in metadata)
odd_leaves = st.sampled_from(["\ud800", Decimal("1.5"), dt.datetime(2026, 1, 1), dt.date(2026, 1, 1), Color.RED,
                              uuid.UUID(int=7), b"bytes", {1, 2}, float("nan"), float("inf"), StrSubclass("s")])
metadata = st.one_of(
    st.none(),
    st.dictionaries(texts, json_leaves, max_size=5),
    st.dictionaries(texts, st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3)
                                        | st.dictionaries(texts, inner, max_size=3), max_leaves=6), max_size=4),
)
odd_metadata = st.dictionaries(texts | st.integers(0, 3), st.recursive(
    json_leaves | odd_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
    | st.tuples(inner, inner), max_leaves=6), max_size=4)
quantities = st.one_of(st.integers(1, 2**70), st.floats(min_value=0, exclude_min=True, allow_infinity=False),
                       st.sampled_from([5e-324, 1e-05, 1e16, 1.7976931348623157e308, 0.1, 12.0]))


@st.composite
def valid_events(draw: st.DrawFn) -> BaseModel:
    """A validated event of any type, with random values (those the model refuses are not drawn)."""
    model = draw(st.sampled_from(EVENT_MODELS))
    values: dict[str, Any] = {
        "customer_id": draw(texts), "feature_id": draw(texts), "user_id": draw(st.none() | texts),
        "team_id": draw(st.none() | texts), "metadata": draw(metadata), "timestamp": draw(st.none() | timestamps),
        "event_id": draw(st.none() | texts),
    }
    if model is TokenUsageEvent:
        values.update(provider=draw(texts), model=draw(texts), input_tokens=draw(counts), output_tokens=draw(counts))
        values["cached_input_tokens"] = draw(st.none() | st.integers(0, values["input_tokens"]))
        values["reasoning_tokens"] = draw(st.none() | st.integers(0, values["output_tokens"]))
    elif model is ImageGenerationEvent:
        values.update(provider=draw(texts), model=draw(texts), image_count=draw(st.integers(1, INT64_MAX)),
                      image_size=draw(st.none() | texts), quality=draw(st.none() | texts))
    else:
        values.update(unit_type=draw(texts), quantity=draw(quantities))
    try:
        return model(**{name: value for name, value in values.items() if value is not None})
    except ValidationError:
        assume(False)
        raise


@st.composite
def any_events(draw: st.DrawFn) -> Any:
    """A valid event, or one made or changed without validation, as users can."""
    event = draw(valid_events())
    fields = dict(event.__dict__)
    how = draw(st.sampled_from(["valid"] * 6 + ["construct", "copy", "reorder", "subclass"]))
    names = list(type(event).model_fields)
    if how == "construct":  # some fields left out, some set to None or to anything
        for name in draw(st.lists(st.sampled_from(names), max_size=3)):
            choice = draw(st.integers(0, 2))
            if choice == 0:
                fields.pop(name, None)
            else:
                fields[name] = None if choice == 1 else draw(json_leaves | odd_leaves | odd_metadata)
        return type(event).model_construct(**fields)
    if how == "copy":
        return event.model_copy(update={draw(st.sampled_from([*names, "unknown"])): draw(st.none() | json_leaves)})
    if how == "reorder":  # a field deleted, then set again: it moves to the end of the instance's __dict__
        name = draw(st.sampled_from([name for name in names if name != "event_type"]))
        value = getattr(event, name)
        delattr(event, name)
        if draw(st.booleans()):
            setattr(event, name, value)
        return event
    if how == "subclass":
        return SubEvent.model_construct(**fields) if isinstance(event, TokenUsageEvent) else event
    return event


def _both(events: list[Any]) -> tuple[bytes | None, bytes | Exception]:
    ours = orjson_body(events)
    try:
        theirs: bytes | Exception = pydantic_body(events)
    except Exception as exc:
        theirs = exc
    return ours, theirs


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic warns of the wrong types model_construct allows
@SETTINGS
@given(events=st.lists(any_events(), min_size=1, max_size=6))
@example(events=[CustomEvent(customer_id="c", feature_id="f", unit_type="u", quantity=1e-05,
                             timestamp=dt.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(0, 1))))])
def test_whenever_orjson_answers_the_body_is_pydantics_byte_for_byte(events: list[Any]) -> None:
    ours, theirs = _both(events)
    event("orjson wrote the body" if ours is not None else "pydantic wrote the body")
    if ours is None:
        return  # pydantic writes the body (and raises its own error if it has one)
    assert not isinstance(theirs, Exception), f"orjson wrote a body pydantic refuses ({theirs!r})"
    assert ours == theirs


def _plain_json(value: Any) -> bool:
    """JSON orjson takes as it is: str, bool, float, None, 64-bit ints, and lists, tuples and dicts of them."""
    if type(value) in (dict, list, tuple):
        return all(map(_plain_json, value.values() if type(value) is dict else value))
    return type(value) in (str, bool, float, type(None)) or (type(value) is int and -(2**63) <= value < 2**64)


def _whole_minutes(timestamp: dt.datetime) -> bool:
    offset = timestamp.utcoffset()
    return offset is not None and offset % dt.timedelta(minutes=1) == dt.timedelta(0)


@settings(SETTINGS, max_examples=100)
@given(events=st.lists(valid_events(), min_size=1, max_size=6))
def test_valid_events_of_plain_json_take_orjsons_path(events: list[BaseModel]) -> None:
    ours, theirs = _both(events)
    if isinstance(theirs, Exception):  # text that is not UTF-8 (a lone surrogate): pydantic refuses it
        assert ours is None
    elif all(_whole_minutes(event.__dict__["timestamp"]) and all(
            _plain_json(value) for name, value in event.__dict__.items() if name != "timestamp") for event in events):
        assert ours is not None
        assert ours == theirs
    else:  # an int beyond 64 bits, an offset with seconds: pydantic's
        assert ours is None


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("make", [
    pytest.param(lambda: SubEvent(**_token()), id="a subclass"),
    pytest.param(lambda: TokenUsageEvent.model_construct(customer_id="c"), id="fields left out"),
    pytest.param(lambda: _constructed(metadata={"price": Decimal("1.5")}), id="a Decimal in metadata"),
    pytest.param(lambda: _constructed(metadata={"at": dt.datetime(2026, 1, 1)}), id="a datetime in metadata"),
    pytest.param(lambda: _token_event(metadata={"big": 2**64}), id="an int beyond 64 bits"),
    pytest.param(lambda: _constructed(metadata={"deep": [{"x": Color.RED}]}), id="an Enum deep in metadata"),
    pytest.param(lambda: _constructed(metadata={"s": StrSubclass("x")}), id="a str subclass"),
    pytest.param(lambda: _constructed(metadata={1: "a"}), id="a non-str key"),
    pytest.param(lambda: _constructed(timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=90))
                                                            )), id="an offset of 1 min 30 s"),
    pytest.param(lambda: _token_event().model_copy(update={"unknown": 1}), id="a key that is not a field"),
    pytest.param(lambda: _constructed(input_tokens=True), id="a bool in a number field (pydantic writes 1)"),
    pytest.param(lambda: _constructed(customer_id="\ud800"), id="text that is not UTF-8"),
])
def test_what_orjson_cannot_write_as_pydantic_goes_to_pydantic_whole(make: Any) -> None:
    events = [_token_event(), make(), CustomEvent(customer_id="c", feature_id="f", unit_type="u", quantity=2)]
    ours, theirs = _both(events)
    assert ours is None
    if isinstance(theirs, Exception):  # pydantic's own error, as without orjson
        with pytest.raises(type(theirs)):
            body_json.dumps(IngestRequest.model_construct(events=events))
    else:
        assert body_json.dumps(IngestRequest.model_construct(events=events)) == theirs


def test_what_orjson_writes_as_pydantic_stays_with_orjson() -> None:
    offset = dt.timezone(dt.timedelta(hours=-3, minutes=-30))
    fields = {**_token(), "metadata": {"a": None, "b": [None, 1.5, True, {"c": "é"}]}, "user_id": "u",
              "team_id": None, "timestamp": dt.datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=offset)}
    # pydantic writes an instance's fields in its __dict__'s order (a field deleted and set again comes last),
    # without its None values, even a required field's (model_construct)
    events = [TokenUsageEvent(**fields), _constructed(customer_id=None, metadata={"d": (1, "x")}),
              _moved(TokenUsageEvent(**fields), "user_id", "u2")]
    ours, theirs = _both(events)
    assert ours is not None and ours == theirs
    assert b'"team_id"' not in ours and b'"metadata":{"a":null,"b":[null,1.5,true,{"c":"\xc3\xa9"}]}' in ours
    assert b'{"event_type":"TOKEN_USAGE","event_id"' in ours and b'"metadata":{"d":[1,"x"]}' in ours
    assert b'"timestamp":"2026-01-01T12:00:00.000005-03:30"' in ours
    assert ours.endswith(b'"output_tokens":5,"user_id":"u2"}]}')


def test_a_timestamp_at_utc_needs_no_offset_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    # datetime.timezone.utc (the SDK's default timestamps) and the tzinfo pydantic gives a timestamp it parsed
    # at UTC are known by identity; any other offset is looked at (to refuse seconds in it)
    looked_at: list[dt.datetime] = []

    def whole_minutes(value: dt.datetime) -> bool:
        looked_at.append(value)
        return True

    monkeypatch.setattr(body_json, "_whole_minutes", whole_minutes)
    build = body_json._builder(list(EVENT_MODELS))
    at_utc = [_token_event(timestamp=text) for text in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5+00:00",
                                                        "2026-01-01T00:00:00-00:00")]
    at_utc.append(_token_event(timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)))
    assert type(at_utc[0].timestamp.tzinfo) is not dt.timezone  # pydantic's own tzinfo, not the stdlib's
    assert len(build(at_utc)) == len(at_utc) and looked_at == []
    elsewhere = _token_event(timestamp="2026-01-01T00:00:00+05:45")
    build([elsewhere])
    assert looked_at == [elsewhere.timestamp]
    ours, theirs = _both(at_utc)
    assert ours is not None and ours == theirs


class CountingOrjson:
    """orjson itself, counting its `dumps` calls: shows which path wrote a body."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(orjson, name)

    def dumps(self, *args: Any, **kwargs: Any) -> bytes:
        self.calls += 1
        return orjson.dumps(*args, **kwargs)


def test_the_common_ingest_takes_orjsons_path(events_api: EventsApi, monkeypatch: pytest.MonkeyPatch) -> None:
    body_json._encoder()
    spy = CountingOrjson()
    monkeypatch.setattr(body_json, "orjson", spy)
    api = events_api
    events = _batch()
    assert api.ingest(events=events).accepted == len(events)
    assert spy.calls == 1
    dicts: list[Any] = [{"event_type": "CUSTOM", "customer_id": "c", "feature_id": "f", "unit_type": "u",
                         "quantity": 1}]
    assert api.ingest(events=dicts).accepted == 1
    assert spy.calls == 2  # dicts are validated into models first, then written the same way


def test_without_orjson_pydantic_writes_every_body(events_api: EventsApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body_json, "orjson", None)  # what an install without the `orjson` extra finds

    def never(body: Any) -> None:
        raise AssertionError("orjson's path taken without orjson")

    monkeypatch.setattr(body_json, "_ingest_request", never)
    events = _batch()
    assert body_json.dumps(IngestRequest.model_construct(events=events)) == pydantic_body(events)
    assert events_api.ingest(events=events).accepted == len(events)


def test_the_same_events_reach_the_server_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    events = _batch()
    received = []
    for encoder in (orjson, None):
        monkeypatch.setattr(body_json, "orjson", encoder)
        with LocalIngestServer() as server, ApiClient(_config(server)) as client:
            assert EventsApi(client).ingest(events=events).accepted == len(events)
            received.append([list(event.items()) for event in server.events])  # values and key order
    assert received[0] == received[1]
    assert len(received[0]) == len(events)


# --- helpers ------------------------------------------------------------------------------------------------

def _token() -> dict[str, Any]:
    return {"customer_id": "cust", "feature_id": "chat", "provider": "openai", "model": "gpt-4o",
            "input_tokens": 10, "output_tokens": 5}


def _token_event(**overrides: Any) -> TokenUsageEvent:
    return TokenUsageEvent(**{**_token(), **overrides})


def _constructed(**overrides: Any) -> TokenUsageEvent:
    return TokenUsageEvent.model_construct(**{**_token_event().__dict__, **overrides})


def _moved(event: TokenUsageEvent, name: str, value: Any) -> TokenUsageEvent:
    delattr(event, name)
    setattr(event, name, value)
    return event


def _batch() -> list[Any]:
    return [
        _token_event(metadata={"request_id": "req_1", "tags": ["a", None], "ratio": 0.5}, cached_input_tokens=2,
                     timestamp="2026-11-22T17:00:00.250+01:00"),
        ImageGenerationEvent(customer_id="cust", user_id="ü\u2028", feature_id="img", provider="openai",
                             model="gpt-image-1", image_count=2, image_size="1024x1024"),
        CustomEvent(customer_id="cust", team_id="t", feature_id="pdf", unit_type="pages", quantity=1e-05),
        CustomEvent(customer_id="cust", feature_id="pdf", unit_type="pages", quantity=12),
    ]


def _config(server: LocalIngestServer) -> Configuration:
    config = Configuration(host=server.url)
    config.api_key["bearerAuth"] = server.api_key
    return config
