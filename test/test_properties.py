"""Property tests of the way in (issue 10): every invalid event is refused by name before anything is sent,
and every valid event reaches the wire unchanged, through the constructors, `from_dict`, `ingest` with
dicts and `OpenMonetize.track`, against a real LocalIngestServer on loopback.

Examples are bounded (`max_examples`) so the file runs in seconds as part of the suite.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from conftest import API_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from openmonetize import ApiClient, CustomEvent, EventsApi, ImageGenerationEvent, OpenMonetize, TokenUsageEvent
from openmonetize.configuration import Configuration
from openmonetize.testing import LocalIngestServer

MODELS: dict[str, Any] = {"TOKEN_USAGE": TokenUsageEvent, "IMAGE_GENERATION": ImageGenerationEvent,
                          "CUSTOM": CustomEvent}
INT64_MAX = 2**63 - 1
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Event = dict[str, Any]


# --- one loopback server, client and tracker for the module (hypothesis runs many examples per test) ----

class Wire:
    """The paths an event can take to the wire, and what the server stored."""

    def __init__(self, server: LocalIngestServer, api: EventsApi, om: OpenMonetize) -> None:
        self.server, self.api, self.om = server, api, om

    def send(self, path: str, event: Event) -> None:
        """Build (or pass) the event the way `path` does and deliver it; raises what that path raises."""
        model = MODELS[event["event_type"]]
        if path == "constructor":
            self.api.ingest(events=[model(**event)])
        elif path == "from_dict":
            self.api.ingest(events=[model.from_dict(event)])
        elif path == "ingest":
            self.api.ingest(events=[event])
        else:
            self.om.track(event)
            assert self.om.flush(timeout=10)

    def stored(self, event_id: str) -> Event:
        return next(e for e in reversed(self.server.events) if e["event_id"] == event_id)


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    with LocalIngestServer(api_key=API_KEY) as server:
        config = Configuration(host=server.url)
        config.api_key["bearerAuth"] = API_KEY
        om = OpenMonetize(api_key=API_KEY, base_url=server.url, flush_interval=0.01)
        try:
            with ApiClient(config) as client:
                yield Wire(server, EventsApi(client), om)
        finally:
            om.shutdown()


PATHS = ["constructor", "from_dict", "ingest", "track"]


# --- valid events ----------------------------------------------------------------------------------

def text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), min_size=1, max_size=min(max_size, 40))


counts = st.integers(min_value=0, max_value=INT64_MAX)
plain_json = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), text(20),
                       st.floats(allow_nan=False, allow_infinity=False))
zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))


@st.composite
def timestamps(draw: st.DrawFn) -> datetime | str:
    """What the docs promise: aware or naive datetimes, and RFC 3339 strings with or without an offset."""
    moment = draw(instants)
    aware = moment.replace(tzinfo=draw(zones))
    options: list[datetime | str] = [aware, moment, aware.isoformat(), aware.isoformat().replace("+00:00", "Z"),
                                     moment.isoformat(timespec="seconds")]
    return draw(st.sampled_from(options))


def instant(value: datetime | str) -> datetime:
    """The instant a documented timestamp stands for: a missing offset is local time."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


@st.composite
def valid_events(draw: st.DrawFn) -> Event:
    event_type = draw(st.sampled_from(sorted(MODELS)))
    event: Event = {"event_type": event_type, "event_id": str(uuid.uuid4()), "customer_id": draw(text(256)),
                    "feature_id": draw(text(256)), "timestamp": draw(timestamps())}
    for optional in ("user_id", "team_id"):
        if draw(st.booleans()):
            event[optional] = draw(text(256))
    if draw(st.booleans()):
        event["metadata"] = draw(st.dictionaries(text(10), plain_json, max_size=5))
    if event_type == "TOKEN_USAGE":
        event.update(provider=draw(text(128)), model=draw(text(256)), input_tokens=draw(counts),
                     output_tokens=draw(counts))
        if draw(st.booleans()):
            event["cached_input_tokens"] = draw(st.integers(0, event["input_tokens"]))
        if draw(st.booleans()):
            event["reasoning_tokens"] = draw(st.integers(0, event["output_tokens"]))
    elif event_type == "IMAGE_GENERATION":
        event.update(provider=draw(text(128)), model=draw(text(256)), image_count=draw(st.integers(1, INT64_MAX)))
        for optional in ("image_size", "quality"):
            if draw(st.booleans()):
                event[optional] = draw(text(64))
    else:
        event.update(unit_type=draw(text(128)), quantity=draw(st.one_of(
            st.integers(1, 10**30), st.floats(min_value=0, exclude_min=True, allow_infinity=False))))
    return event


@SETTINGS
@given(event=valid_events(), path=st.sampled_from(PATHS))
def test_valid_events_reach_the_wire_unchanged(wire: Wire, event: Event, path: str) -> None:
    given_event = copy.deepcopy(event)
    wire.send(path, event)
    stored = wire.stored(given_event["event_id"])
    assert instant(stored.pop("timestamp")) == instant(given_event.pop("timestamp"))
    assert stored == given_event


# --- invalid events --------------------------------------------------------------------------------

BAD_TIMESTAMPS = [0, 1.0, "10", b"10", Decimal("1700000000"), "-1", True, "2026-11-22", "2026-11-22T17:00Z",
                  "2026-11-22 17:00:00Z", "yesterday"]
STRING_FIELDS = ["customer_id", "feature_id", "provider", "model", "unit_type"]
COUNT_FIELDS = {"input_tokens": 0, "output_tokens": 0, "image_count": 1}


@st.composite
def invalid_events(draw: st.DrawFn) -> tuple[Event, str]:
    """A valid event with one thing wrong, and the field the error must name."""
    event = draw(valid_events())
    fields = [f for f in event if f not in ("event_type", "event_id")]
    kind = draw(st.sampled_from(["unknown", "type", "range", "timestamp", "cross"]))
    if kind == "unknown":
        name = draw(st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True).filter(
            lambda n: n not in MODELS[event["event_type"]].model_fields))
        event[name] = draw(plain_json)
        return event, f"{name}: unknown field"
    if kind == "timestamp":
        event["timestamp"] = draw(st.sampled_from(BAD_TIMESTAMPS))
        return event, "timestamp"
    if kind == "cross" and event["event_type"] == "TOKEN_USAGE":
        part, whole = draw(st.sampled_from([("cached_input_tokens", "input_tokens"),
                                            ("reasoning_tokens", "output_tokens")]))
        event[whole] = draw(st.integers(0, INT64_MAX - 1))
        event[part] = draw(st.integers(event[whole] + 1, INT64_MAX))
        return event, f"{part}="
    field = draw(st.sampled_from([f for f in fields if f in STRING_FIELDS or f in COUNT_FIELDS
                                  or f == "quantity" or f == "metadata"]))
    if kind == "type":
        if field in COUNT_FIELDS:
            bad: Any = draw(st.sampled_from([str(event[field]), float(event[field]), True, None, Decimal(1)]))
        elif field == "quantity":
            bad = draw(st.sampled_from(["1", True, None, Decimal("1.5"), [1]]))
        elif field == "metadata":
            bad = draw(st.sampled_from(["{}", [1], {"when": datetime(2026, 1, 1)}, {"x": float("nan")}]))
        else:
            bad = draw(st.sampled_from([1, 1.5, b"x", True, None, ["x"]]))
    elif field in COUNT_FIELDS:
        bad = draw(st.sampled_from([COUNT_FIELDS[field] - 1, INT64_MAX + 1, -(2**70), 10**400]))
    elif field == "quantity":
        bad = draw(st.sampled_from([0, -1, -0.5, 0.0, 10**400, float("inf"), float("nan")]))
    elif field == "metadata":
        bad = draw(st.sampled_from([{str(i): i for i in range(51)}, {"big": "x" * 5000}]))
    else:
        limit = MODELS[event["event_type"]].model_fields[field].metadata[-1].max_length
        bad = draw(st.sampled_from(["", "x" * (limit + 1)]))
    event[field] = bad
    return event, field


@SETTINGS
@given(case=invalid_events(), path=st.sampled_from(PATHS))
def test_invalid_events_are_refused_by_name_before_anything_is_sent(wire: Wire, case: tuple[Event, str],
                                                                     path: str) -> None:
    event, names = case
    before = wire.server.request_count
    with pytest.raises(ValidationError) as exc:
        wire.send(path, event)
    assert names in str(exc.value)
    assert wire.server.request_count == before

