"""Event construction: ids, defaults, timestamps and every validation rule, before anything is sent."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from openmonetize import CustomEvent, ImageGenerationEvent, TokenUsageEvent
from openmonetize.lib.event_ids import new_event_id
from openmonetize.lib.event_rules import MAX_METADATA_JSON_BYTES, MAX_METADATA_KEYS
from openmonetize.models.event import Event

TOKEN: dict[str, Any] = dict(customer_id="cust_abc", feature_id="chat", provider="openai", model="gpt-4o",
                             input_tokens=10, output_tokens=5)
IMAGE: dict[str, Any] = dict(customer_id="cust_abc", feature_id="img", provider="openai", model="dall-e-3",
                             image_count=1)
CUSTOM: dict[str, Any] = dict(customer_id="cust_abc", feature_id="pdf", unit_type="pages", quantity=3)


EVENT = TypeAdapter(Event)


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value)


# --- ids --------------------------------------------------------------------------------------------

def test_event_id_is_a_uuid7_generated_once():
    event = TokenUsageEvent(**TOKEN)
    parsed = uuid.UUID(event.event_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert event.event_id == event.event_id  # a property read never regenerates
    assert json.loads(event.to_json())["event_id"] == event.event_id


def test_event_ids_are_time_ordered_and_unique():
    first = new_event_id()
    time.sleep(0.002)
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(first < later for later in ids)
    millis = uuid.UUID(ids[0]).int >> 80
    assert abs(millis - time.time() * 1000) < 60_000


def test_forked_child_does_not_repeat_parent_ids():
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        os.write(write_fd, json.dumps([new_event_id() for _ in range(100)]).encode())
        os._exit(0)
    os.close(write_fd)
    parent_ids = {new_event_id() for _ in range(100)}
    with os.fdopen(read_fd) as pipe:
        child_ids = set(json.loads(pipe.read()))
    os.waitpid(pid, 0)
    assert len(child_ids) == 100
    assert not parent_ids & child_ids
    # the 74 random bits differ, not just the clock
    assert len({uuid.UUID(i).int & ((1 << 74) - 1) for i in parent_ids | child_ids}) == 200


def test_explicit_event_id_is_kept_and_none_means_generate():
    assert TokenUsageEvent(event_id="evt_123", **TOKEN).event_id == "evt_123"
    assert uuid.UUID(TokenUsageEvent(event_id=None, **TOKEN).event_id).version == 7


def test_dict_gets_its_id_written_back_so_a_resend_is_the_same_event():
    data = {"event_type": "CUSTOM", **CUSTOM}
    first = EVENT.validate_python(data)
    second = EVENT.validate_python(data)
    assert data["event_id"] == first.event_id == second.event_id


# --- defaults and types -------------------------------------------------------------------------------

@pytest.mark.parametrize(("cls", "fields", "event_type"), [
    (TokenUsageEvent, TOKEN, "TOKEN_USAGE"),
    (ImageGenerationEvent, IMAGE, "IMAGE_GENERATION"),
    (CustomEvent, CUSTOM, "CUSTOM"),
])
def test_event_type_is_implied_by_the_class(cls, fields, event_type):
    event = cls(**fields)
    assert event.event_type == event_type
    assert json.loads(event.to_json())["event_type"] == event_type
    with pytest.raises(ValidationError, match="event_type"):
        cls(event_type="SOMETHING_ELSE", **fields)


def test_event_from_dict_picks_the_member_at_runtime():
    event = Event.from_dict({"event_type": "CUSTOM", **CUSTOM})  # type: ignore[attr-defined]
    assert isinstance(event, CustomEvent)


def test_dict_is_validated_through_the_discriminator():
    assert isinstance(EVENT.validate_python({"event_type": "TOKEN_USAGE", **TOKEN}), TokenUsageEvent)
    assert isinstance(EVENT.validate_python({"event_type": "IMAGE_GENERATION", **IMAGE}), ImageGenerationEvent)
    assert isinstance(EVENT.validate_python({"event_type": "CUSTOM", **CUSTOM}), CustomEvent)


def test_unknown_or_missing_event_type_is_refused_by_name():
    with pytest.raises(ValidationError) as exc:
        EVENT.validate_python({"event_type": "VIDEO", **CUSTOM})
    assert "'VIDEO'" in error_text(exc) and "event_type" in error_text(exc)
    assert "'TOKEN_USAGE'" in error_text(exc) and "'CUSTOM'" in error_text(exc)
    with pytest.raises(ValidationError, match="event_type"):
        EVENT.validate_python(dict(CUSTOM))


# --- timestamps ---------------------------------------------------------------------------------------

def test_omitted_timestamp_is_now_with_an_offset():
    """To the millisecond: the same instant as the id made with it (one clock reading)."""
    before = datetime.now(timezone.utc)
    event = CustomEvent(**CUSTOM)
    assert event.timestamp.tzinfo is not None
    millisecond = before.replace(microsecond=before.microsecond // 1000 * 1000)
    assert millisecond <= event.timestamp <= datetime.now(timezone.utc)
    assert event.timestamp.microsecond % 1000 == 0


def test_aware_datetime_and_iso_string_keep_their_offset():
    plus2 = timezone(timedelta(hours=2))
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=plus2)
    assert CustomEvent(timestamp=aware, **CUSTOM).timestamp == aware
    parsed = CustomEvent(timestamp="2026-01-02T03:04:05+02:00", **CUSTOM)
    assert parsed.timestamp == aware
    assert json.loads(parsed.to_json())["timestamp"] == "2026-01-02T03:04:05+02:00"


@pytest.fixture
def local_timezone_plus_5():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Etc/GMT-5"  # POSIX sign: this is UTC+05:00
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_naive_timestamp_is_local_time_and_sent_with_offset(local_timezone_plus_5):
    naive = datetime(2026, 1, 2, 3, 4, 5)
    for value in (naive, naive.isoformat()):
        event = CustomEvent(timestamp=value, **CUSTOM)
        assert event.timestamp.utcoffset() == timedelta(hours=5)
        assert json.loads(event.to_json())["timestamp"] == "2026-01-02T03:04:05+05:00"


def test_bad_timestamp_is_refused():
    with pytest.raises(ValidationError, match="timestamp"):
        CustomEvent(timestamp="yesterday-ish", **CUSTOM)


# --- validation rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "rule"), [
    ("input_tokens", -1, "greater than or equal to 0"),
    ("output_tokens", -5, "greater than or equal to 0"),
    ("input_tokens", 1.5, "valid integer"),
    ("input_tokens", "10", "valid integer"),
    ("input_tokens", True, "valid integer"),
    ("output_tokens", False, "valid integer"),
    ("cached_input_tokens", -1, "greater than or equal to 0"),
    ("reasoning_tokens", True, "valid integer"),
    ("customer_id", "", "at least 1 character"),
    ("feature_id", "", "at least 1 character"),
    ("event_id", "", "at least 1 character"),
    ("event_id", "x" * 129, "at most 128 characters"),
    ("model", "", "at least 1 character"),
    ("customer_id", 123, "valid string"),
])
def test_token_usage_field_rules(field, value, rule):
    with pytest.raises(ValidationError) as exc:
        TokenUsageEvent(**{**TOKEN, field: value})
    text = error_text(exc)
    assert field in text and rule in text and f"input_value={value!r}"[:25] in text


def test_required_fields_are_named_when_missing():
    with pytest.raises(ValidationError) as exc:
        TokenUsageEvent(provider="openai", model="m", input_tokens=1, output_tokens=1)  # type: ignore[call-arg]
    assert "customer_id\n  Field required" in error_text(exc)
    assert "feature_id\n  Field required" in error_text(exc)


def test_reasoning_may_not_exceed_output():
    assert TokenUsageEvent(**{**TOKEN, "reasoning_tokens": 5}).reasoning_tokens == 5
    with pytest.raises(ValidationError) as exc:
        TokenUsageEvent(**{**TOKEN, "reasoning_tokens": 6})
    assert "reasoning_tokens=6 exceeds output_tokens=5" in error_text(exc)


def test_cached_may_not_exceed_input():
    with pytest.raises(ValidationError, match="cached_input_tokens=11 exceeds input_tokens=10"):
        TokenUsageEvent(**{**TOKEN, "cached_input_tokens": 11})


def test_rules_hold_on_assignment_too():
    event = TokenUsageEvent(**{**TOKEN, "reasoning_tokens": 5})
    with pytest.raises(ValidationError, match="output_tokens"):
        event.output_tokens = 4
    with pytest.raises(ValidationError, match="input_tokens"):
        event.input_tokens = -1


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("image_count", 0, "greater than or equal to 1"),
    ("image_count", True, "valid integer"),
    ("image_size", "", "at least 1 character"),
])
def test_image_field_rules(field, value, rule):
    with pytest.raises(ValidationError, match=rule) as exc:
        ImageGenerationEvent(**{**IMAGE, field: value})
    assert field in error_text(exc)


@pytest.mark.parametrize("value", [0, -1, -0.5, math.nan, math.inf, -math.inf, True, "3"])
def test_quantity_must_be_a_finite_number_above_zero(value):
    with pytest.raises(ValidationError) as exc:
        CustomEvent(**{**CUSTOM, "quantity": value})
    assert "quantity" in error_text(exc)


def test_unit_type_must_not_be_empty():
    with pytest.raises(ValidationError, match="unit_type"):
        CustomEvent(**{**CUSTOM, "unit_type": ""})


def test_metadata_bounds():
    fits = {f"k{i}": "v" for i in range(MAX_METADATA_KEYS)}
    assert CustomEvent(**CUSTOM, metadata=fits).metadata == fits
    with pytest.raises(ValidationError, match=f"metadata has 51 keys: at most {MAX_METADATA_KEYS}"):
        CustomEvent(**CUSTOM, metadata={**fits, "one_more": 1})
    big = {"text": "x" * MAX_METADATA_JSON_BYTES}
    with pytest.raises(ValidationError, match=f"at most {MAX_METADATA_JSON_BYTES} bytes"):
        CustomEvent(**CUSTOM, metadata=big)
    with pytest.raises(ValidationError, match="metadata must be plain JSON"):
        CustomEvent(**CUSTOM, metadata={"when": datetime.now()})
    with pytest.raises(ValidationError, match="metadata must be plain JSON"):
        CustomEvent(**CUSTOM, metadata={"ratio": math.nan})


def test_metadata_limit_matches_the_spec():
    import yaml

    with open(os.path.join(os.path.dirname(__file__), "..", "openapi.yaml")) as f:
        spec = yaml.safe_load(f)
    metadata = spec["components"]["schemas"]["TokenUsageEvent"]["properties"]["metadata"]
    assert metadata["x-max-json-bytes"] == MAX_METADATA_JSON_BYTES
    assert metadata["maxProperties"] == MAX_METADATA_KEYS


# --- property-based: numeric rules ----------------------------------------------------------------------

@given(st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=2**62))
def test_any_non_negative_token_counts_are_accepted_and_round_trip(input_tokens, output_tokens):
    event = TokenUsageEvent(**{**TOKEN, "input_tokens": input_tokens, "output_tokens": output_tokens})
    wire = json.loads(event.to_json())
    assert (wire["input_tokens"], wire["output_tokens"]) == (input_tokens, output_tokens)


@given(st.integers(max_value=-1))
def test_any_negative_token_count_is_refused(value):
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        TokenUsageEvent(**{**TOKEN, "input_tokens": value})


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_reasoning_rule_matches_its_definition(output_tokens, reasoning_tokens):
    fields: dict[str, Any] = {**TOKEN, "output_tokens": output_tokens, "reasoning_tokens": reasoning_tokens}
    if reasoning_tokens <= output_tokens:
        assert TokenUsageEvent(**fields).reasoning_tokens == reasoning_tokens
    else:
        with pytest.raises(ValidationError, match="reasoning_tokens"):
            TokenUsageEvent(**fields)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers())
def test_quantity_rule_matches_its_definition(value):
    fields: dict[str, Any] = {**CUSTOM, "quantity": value}
    if math.isfinite(value) and value > 0:
        assert json.loads(CustomEvent(**fields).to_json())["quantity"] == value
    else:
        with pytest.raises(ValidationError, match="quantity"):
            CustomEvent(**fields)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=0))
def test_float_token_counts_are_refused_even_when_whole(value):
    with pytest.raises(ValidationError, match="valid integer"):
        TokenUsageEvent(**{**TOKEN, "output_tokens": value})


# --- unknown fields (issue 10) ----------------------------------------------------------------------

UNKNOWN = [(TokenUsageEvent, TOKEN, "cached_tokens"), (TokenUsageEvent, TOKEN, "reasoning_token"),
           (TokenUsageEvent, TOKEN, "user"), (ImageGenerationEvent, IMAGE, "images"),
           (CustomEvent, CUSTOM, "unit")]


@pytest.mark.parametrize(("model", "fields", "unknown"), UNKNOWN)
def test_unknown_fields_are_refused_and_the_allowed_ones_listed(model, fields, unknown):
    allowed = ", ".join(sorted(model.model_fields))
    builds = [lambda: model(**fields, **{unknown: 3}), lambda: model.from_dict({**fields, unknown: 3}),
              lambda: model.model_validate({**fields, unknown: 3}),
              lambda: EVENT.validate_python({**fields, "event_type": model.model_fields["event_type"].default,
                                             unknown: 3})]
    for build in builds:
        with pytest.raises(ValidationError) as exc:
            build()
        assert f"{unknown}: unknown field; allowed: {allowed}" in error_text(exc)
    event = model(**fields)
    with pytest.raises(ValidationError, match=f"{unknown}: unknown field"):
        setattr(event, unknown, 3)


def test_unknown_fields_in_dicts_are_refused_before_sending(events_api, server):
    from openmonetize import OpenMonetize

    as_dict = {"event_type": "TOKEN_USAGE", **TOKEN, "cached_tokens": 3}
    with pytest.raises(ValidationError, match="cached_tokens: unknown field; allowed: cached_input_tokens, "):
        events_api.ingest(events=[as_dict])
    om = OpenMonetize(api_key="sk_test_0123456789abcdef", base_url=server.url, flush_interval=0.05)
    try:
        with pytest.raises(ValidationError, match="cached_tokens: unknown field; allowed: cached_input_tokens, "):
            om.track(as_dict)
    finally:
        om.shutdown()
    assert server.request_count == 0


def test_responses_keep_fields_a_newer_service_adds():
    from openmonetize import IngestResponse

    answer = IngestResponse.from_dict({"accepted": 1, "duplicates": 0, "rejected": 0, "region": "eu"})
    assert answer is not None and answer.accepted == 1
    assert answer.additional_properties == {"region": "eu"}


# --- int64 and quantity range (issue 10) -------------------------------------------------------------

INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(("model", "fields", "name"), [
    (TokenUsageEvent, TOKEN, "input_tokens"), (TokenUsageEvent, TOKEN, "output_tokens"),
    (TokenUsageEvent, {**TOKEN, "input_tokens": INT64_MAX}, "cached_input_tokens"),
    (TokenUsageEvent, {**TOKEN, "output_tokens": INT64_MAX}, "reasoning_tokens"),
    (ImageGenerationEvent, IMAGE, "image_count"),
])
def test_counts_above_int64_are_refused(model, fields, name):
    assert getattr(model(**{**fields, name: INT64_MAX}), name) == INT64_MAX
    with pytest.raises(ValidationError) as exc:
        model(**{**fields, name: INT64_MAX + 1})
    assert exc.value.errors()[0]["loc"] == (name,)
    assert "less than or equal to 9223372036854775807" in error_text(exc)


@pytest.mark.parametrize("quantity", [10**400, 10**5000, float("inf"), float("-inf"), float("nan")],
                         ids=["10**400", "10**5000", "inf", "-inf", "nan"])
def test_quantity_out_of_range_is_a_validation_error_not_an_overflow(quantity):
    if isinstance(quantity, int):
        with pytest.raises(ValidationError, match=r"quantity=<int of about \d+ digits> is not allowed: quantity mu"):
            CustomEvent(**{**CUSTOM, "quantity": quantity})
    with pytest.raises(ValidationError, match="quantity"):  # -inf and nan fail `> 0` first, on the field itself
        CustomEvent(**{**CUSTOM, "quantity": quantity})
    event = CustomEvent(**CUSTOM)
    with pytest.raises(ValidationError, match="quantity"):
        event.quantity = quantity


# --- timestamps: only what the docs promise (issue 10) ------------------------------------------------

@pytest.mark.parametrize("bad", [0, 1.0, "10", b"10", Decimal("1700000000"), "-1", True,
                                 date(2026, 11, 22), "2026-11-22", "2026-11-22T17:00Z", "2026-11-22 17:00:00Z",
                                 "2026-11-22T17:00:00+0000", "1700000000"])
def test_timestamp_refuses_what_is_not_a_datetime_or_rfc3339(bad):
    with pytest.raises(ValidationError) as exc:
        CustomEvent(**CUSTOM, timestamp=bad)
    assert exc.value.errors()[0]["loc"] == ("timestamp",)
    assert f"timestamp={bad!r} is not allowed: timestamp must be a datetime or an RFC 3339 string" in error_text(exc)
    with pytest.raises(ValidationError, match="timestamp="):
        EVENT.validate_python({"event_type": "CUSTOM", **CUSTOM, "timestamp": bad})


@pytest.mark.parametrize(("given", "sent"), [
    ("2026-11-22T17:00:00Z", "2026-11-22T17:00:00Z"),
    ("2026-11-22t17:00:00.250z", "2026-11-22T17:00:00.250000Z"),
    ("2026-11-22T17:00:00+02:00", "2026-11-22T17:00:00+02:00"),
    (datetime(2026, 11, 22, 17, tzinfo=timezone.utc), "2026-11-22T17:00:00Z"),
])
def test_timestamp_accepts_datetimes_and_rfc3339_strings(given, sent):
    assert json.loads(CustomEvent(**CUSTOM, timestamp=given).to_json())["timestamp"] == sent


def test_timestamp_string_without_offset_is_local_time_like_a_naive_datetime():
    from_string = CustomEvent(**CUSTOM, timestamp="2026-11-22T17:00:00").timestamp
    from_naive = CustomEvent(**CUSTOM, timestamp=datetime(2026, 11, 22, 17)).timestamp
    assert from_string == from_naive == datetime(2026, 11, 22, 17).astimezone()
    assert from_string.tzinfo is not None


def test_quantity_decimal_is_refused_not_turned_into_a_float():
    with pytest.raises(ValidationError, match=r"quantity=Decimal\('1.5'\) is not allowed: pass an int or a float"):
        CustomEvent(**{**CUSTOM, "quantity": Decimal("1.5")})


# --- the union's name (issue 10) ---------------------------------------------------------------------

def test_a_bad_event_type_is_reported_for_event(server):
    from openmonetize import OpenMonetize

    union: Any = Event  # the class at runtime; a Union to type checkers
    for parse in (union.from_dict, lambda d: union.from_json(json.dumps(d))):
        with pytest.raises(ValidationError) as exc:
            parse({"event_type": "VIDEO", **CUSTOM})
        assert error_text(exc).startswith("1 validation error for Event\n")
    om = OpenMonetize(api_key="sk_test_0123456789abcdef", base_url=server.url, flush_interval=0.05)
    try:
        with pytest.raises(ValidationError) as exc:
            om.track({"event_type": "VIDEO", **CUSTOM})
        assert error_text(exc).startswith("1 validation error for Event\n")
        assert "Input tag 'VIDEO' found using 'event_type' does not match" in error_text(exc)
    finally:
        om.shutdown()
    assert server.request_count == 0


def test_metadata_that_contains_itself_is_refused_by_name_not_a_crash():
    circular: dict[str, object] = {"a": 1}
    circular["self"] = circular
    with pytest.raises(ValidationError, match=r"metadata must be plain JSON.*contains itself"):
        CustomEvent(**CUSTOM, metadata=circular)
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(100_000):
        inner["x"] = inner = {}
    with pytest.raises(ValidationError, match="metadata"):
        CustomEvent(**CUSTOM, metadata=deep)
