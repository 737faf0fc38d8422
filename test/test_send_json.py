"""`openmonetize send` writes a plain line's event JSON straight from its decoded dict (`parse_line_json`,
by `event_json`'s rules read from the generated models) instead of building the model: for every line it
must give what the model gives, the same bytes and the same derived id, or the same refusal."""

from __future__ import annotations

import json
import signal
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmonetize.cli.jsonl import _PLANS, Invalid, _decode, _prepared, id_namespace, parse_line, parse_line_json
from openmonetize.lib import strict_json
from openmonetize.lib.event_json import PLANS, _timestamp_text
from openmonetize.models import CustomEvent

SETTINGS = settings(max_examples=100, deadline=None)


def by_the_model(raw: bytes, line: int, namespace_name: str = "") -> tuple[str, bytes] | Invalid:
    """What `send` queued before the direct path: the validated model, serialized as `track` serializes it."""
    event = parse_line(raw, line, id_namespace(namespace_name))
    if isinstance(event, Invalid):
        return event
    return event.event_id, event.__pydantic_serializer__.to_json(event, exclude_none=True)


def digits(n: int, low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda value: f"{value:0{n}d}")


# Plain UTC timestamps (the direct path's), and everything around them the model may read otherwise or refuse:
# impossible dates, hour 24, leap seconds, year 0, 0 to 9 fraction digits, offsets, t/z/space, non-ASCII digits.
plain_timestamps = st.builds(
    lambda y, mo, d, h, mi, s, frac: f"{y}-{mo}-{d}T{h}:{mi}:{s}{frac}Z",
    digits(4, 1, 9999), digits(2, 1, 12), digits(2, 1, 28), digits(2, 0, 23), digits(2, 0, 59), digits(2, 0, 59),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=6).map(lambda f: "." + f)))
odd_timestamps = st.one_of(
    st.builds(lambda y, mo, d, sep, h, mi, s, frac, off: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{off}",
              st.sampled_from(["0000", "0001", "1900", "2000", "2023", "2024", "9999"]), digits(2, 0, 13),
              digits(2, 0, 32), st.sampled_from(["T", "t", " "]), digits(2, 0, 24), digits(2, 0, 60), digits(2, 0, 60),
              st.one_of(st.just(""), st.just("."), st.text("0123456789", min_size=1, max_size=9).map(".".__add__)),
              st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+02:00", "-03:30", "+24:00"])),
    st.sampled_from(["2026-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-11-01T10:00:00.Z",
                     "\uff12\uff10\uff12\uff16-11-01T10:00:00Z", "2026-11-01T10:00:00\n", "2026-11-01", "yesterday",
                     ""]),
    st.integers(0, 2**40), st.just(True), st.just(1.5e9), st.just(["2026-11-01T10:00:00Z"]))
timestamps = st.one_of(plain_timestamps, plain_timestamps, odd_timestamps)

text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
odd_text = st.one_of(st.just(""), st.just("x" * 257), st.integers(0, 3), st.none(), st.just(["a"]))
metadata = st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.none() | st.booleans() | st.integers()
                                                | st.floats(allow_nan=False, allow_infinity=False) | text
                                                | st.lists(st.integers(), max_size=2), max_size=4),
                     st.just({f"k{i}": i for i in range(51)}), st.just({"big": "x" * 4100}), st.just("meta"))


@st.composite
def lines(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(a line, whether it is plain: then the direct path must write it)."""
    kind = draw(st.sampled_from(["TOKEN_USAGE", "IMAGE_GENERATION", "CUSTOM"]))
    event: dict[str, Any] = {"event_type": kind, "customer_id": draw(text), "feature_id": draw(text)}
    if kind == "TOKEN_USAGE":
        event["input_tokens"] = draw(st.integers(0, 10**6))
        event.update(provider=draw(text), model=draw(text), output_tokens=draw(st.integers(0, 10**6)))
        if draw(st.booleans()):
            event["cached_input_tokens"] = draw(st.integers(0, event["input_tokens"]))
    elif kind == "IMAGE_GENERATION":
        event.update(provider=draw(text), model=draw(text), image_count=draw(st.integers(1, 10)))
    else:
        event.update(unit_type=draw(text), quantity=draw(st.integers(1, 10**9) | st.floats(0.001, 1e12)))
    timestamp = draw(timestamps)
    event["timestamp"] = timestamp
    plain = type(timestamp) is str and _timestamp_text(timestamp) is not None
    for name in ("user_id", "team_id"):
        if draw(st.booleans()):
            event[name] = draw(text)
    if draw(st.booleans()):
        event["metadata"] = draw(st.dictionaries(st.text(max_size=5), st.integers() | text, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        event["event_id"] = draw(st.one_of(st.none(), text))
    if draw(st.integers(0, 2)) == 0:  # something the direct path leaves to the model, which may refuse it
        plain = False
        change = draw(st.sampled_from(["missing", "text", "count", "metadata", "unknown", "event_id", "type"]))
        field = draw(st.sampled_from(sorted(event)))
        if change == "missing":
            event.pop(field)
        elif change == "text":
            event[field] = draw(odd_text)
        elif change == "count":
            event[field] = draw(st.sampled_from([-1, 2**63, 1.0, "5", True, None, 0]))
        elif change == "metadata":
            event["metadata"] = draw(metadata)
        elif change == "unknown":
            event[draw(st.sampled_from(["extra", "quantity", "image_count", "input_tokens"]))] = 1
        elif change == "event_id":
            event["event_id"] = draw(st.sampled_from(["", "x" * 129, 7, None]))
        else:
            event["event_type"] = draw(st.sampled_from(["CUSTOM", "TOKEN_USAGE", "custom", None, 3]))
    keys = draw(st.permutations(list(event)))
    raw = json.dumps({key: event[key] for key in keys}, ensure_ascii=draw(st.booleans()),
                     indent=draw(st.sampled_from([None, None, 1]))).replace("\n", "")
    return raw.encode(), plain


@SETTINGS
@given(case=lines(), line=st.integers(1, 10**7), namespace=st.sampled_from(["", "orders-2026"]))
def test_every_line_gives_the_models_bytes_and_id_or_its_refusal(case: tuple[bytes, bool], line: int,
                                                                  namespace: str) -> None:
    raw, plain = case
    direct = parse_line_json(raw, line, id_namespace(namespace))
    assert direct == by_the_model(raw, line, namespace)  # same (id, bytes), or the same Invalid (line, reason, text)
    if plain:  # and a plain line was written directly, with no model built
        data = _prepared(raw, line, id_namespace(namespace))
        assert not isinstance(data, Invalid)
        assert _PLANS[data["event_type"]](data, 0) == direct


@SETTINGS
@given(timestamp=timestamps)
def test_a_timestamp_string_is_written_as_the_model_writes_it_or_left_to_the_model(timestamp: Any) -> None:
    written = _timestamp_text(timestamp)
    if written is None:
        return
    event = CustomEvent(customer_id="c", feature_id="f", unit_type="u", quantity=1, timestamp=timestamp)
    assert json.loads(event.__pydantic_serializer__.to_json(event))["timestamp"] == written


def test_the_direct_path_writes_the_fraction_as_pydantic_does_and_leaves_the_rest_to_the_model() -> None:
    assert _timestamp_text("2026-10-01T00:00:00.050Z") == "2026-10-01T00:00:00.050000Z"
    assert _timestamp_text("2026-10-01T00:00:00.000Z") == _timestamp_text("2026-10-01T00:00:00Z") \
        == "2026-10-01T00:00:00Z"
    assert _timestamp_text("2026-10-01T00:00:00.123456Z") == "2026-10-01T00:00:00.123456Z"
    for other in ["2026-10-01T00:00:00.1234567Z", "2026-10-01T00:00:00+00:00", "2026-10-01t00:00:00z",
                  "2026-02-29T00:00:00Z", "0000-01-01T00:00:00Z", "2026-10-01T23:59:60Z", "2026-10-01T00:00:00",
                  datetime(2026, 10, 1)]:
        assert _timestamp_text(other) is None


def test_an_impossible_date_is_refused_with_the_models_message_as_before() -> None:
    raw = json.dumps({"event_type": "CUSTOM", "customer_id": "c", "feature_id": "f", "unit_type": "pages",
                      "quantity": 2, "timestamp": "2026-02-29T10:00:00Z"}).encode()
    refused = parse_line_json(raw, 3, id_namespace())
    assert isinstance(refused, Invalid) and refused == by_the_model(raw, 3)
    assert refused.reason.startswith("timestamp='2026-02-29T10:00:00Z': ") and refused.line == 3


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=5)


@SETTINGS
@given(text=st.one_of(
    st.text(max_size=20),
    st.builds(lambda before, value, after: before + json.dumps(value) + after, st.sampled_from(["", " ", "\t", "\n"]),
              json_values, st.sampled_from(["", "\n", "\r\n", " \t\n", "x", " 1", "\x0b", "\u2028", "}", "NaN"]))))
def test_a_line_decodes_to_the_strict_decoders_value_or_its_error(text: str) -> None:
    """`send`'s direct scan of a line against `strict_json.loads` (trailing text, NaN, leading space...)."""
    try:
        expected = strict_json.loads(text)
    except Exception as exc:  # whatever it raises, the same
        with pytest.raises(type(exc)) as raised:
            _decode(text)
        assert str(raised.value) == str(exc)
    else:
        assert _decode(text) == expected


def test_a_signal_during_the_direct_path_is_not_taken_for_a_line_to_decline(monkeypatch: pytest.MonkeyPatch) -> None:
    """`send`'s SIGINT handler raises `Interrupted` wherever the main thread is; the direct writer declines on
    any error and the line scan falls back on a bad one: neither may swallow it (test_cli's interrupted run
    then read on, blocked on its open stdin, instead of exiting with 130)."""
    from openmonetize.cli import jsonl
    from openmonetize.cli.common import Interrupted

    def signalled(*_: object) -> None:
        raise Interrupted(signal.SIGINT)

    raw = json.dumps({"event_type": "CUSTOM", "customer_id": "c", "feature_id": "f", "unit_type": "pages",
                      "quantity": 2, "timestamp": "2026-11-01T10:00:00Z"}).encode()
    plan = PLANS[CustomEvent]
    assert plan is not None
    monkeypatch.setitem(plan.namespace, "_timestamp_text", signalled)  # the signal arrives inside the writer
    with pytest.raises(Interrupted):
        parse_line_json(raw, 1, id_namespace())
    monkeypatch.undo()
    monkeypatch.setattr(jsonl, "_scan", signalled)  # ... or while the line is scanned
    with pytest.raises(Interrupted):
        parse_line_json(raw, 1, id_namespace())
