"""The ids `openmonetize send` derives are a compatibility promise (docs/guides/cli.md): the faster formatting
of issue 14 gives, for every line, the text the documented rule gives (the 128-bit value, formatted)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from openmonetize.cli import jsonl
from openmonetize.cli.jsonl import _days_from_civil, derive_event_id, event_time_ms, id_namespace


def documented_rule(namespace: uuid.UUID, line: int, event: dict[str, Any]) -> str:
    """The rule as docs/guides/cli.md states it, and as every earlier version computed it."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha1(namespace.bytes + f"{line}:{canonical}".encode()).digest()
    bits = int.from_bytes(digest[:10], "big")
    value = (documented_time_ms(event.get("timestamp")) << 80 | 0x8 << 76 | (bits >> 68) << 64 | 0b10 << 62
             | bits & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))?")


def documented_time_ms(timestamp: Any) -> int:
    """The id's time part as every earlier version computed it (one regular expression, no cache)."""
    match = _RFC3339.fullmatch(timestamp) if type(timestamp) is str else None
    if match is None:
        return 0
    date, hour, minute, second, fraction, sign, offset_hours, offset_minutes = match.groups()
    minutes = _days_from_civil(int(date[:4]), int(date[5:7]), int(date[8:])) * 1440 + int(hour) * 60 + int(minute)
    if sign:
        minutes += (int(offset_hours) * 60 + int(offset_minutes)) * (-1 if sign == "+" else 1)
    millis = (minutes * 60 + int(second)) * 1000 + (int((fraction + "00")[:3]) if fraction else 0)
    return min(max(millis, 0), (1 << 48) - 1)


timestamps = st.one_of(
    st.builds(lambda y, mo, d, sep, h, mi, s, frac, off: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}"
              f"{frac}{off}",
              st.integers(0, 9999), st.integers(1, 12), st.integers(1, 31), st.sampled_from("Tt "),
              st.integers(0, 23), st.integers(0, 59), st.integers(0, 60),
              st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=10).map(lambda f: "." + f)),
              st.sampled_from(["", "Z", "z", "+02:00", "-03:30", "+14:00", "-12:00", "+2:00"])),
    st.sampled_from(["\uff12\uff10\uff12\uff16-11-01T10:00:00Z", "2026-11-01T10:00:00.Z", "9999-12-31T23:59:59.999Z",
                     "1969-12-31T23:59:59Z",
                     "2026-11-01T10:00:00Z\n", "2026-11-01T10:00:00.1234567890Z"]),
    st.text(max_size=30), st.none(), st.integers())
# (floats, and ints beyond 64 bits, which orjson refuses: those lines' canonical JSON is json's own)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10)
                           | st.floats(allow_nan=False, allow_infinity=False) | st.integers(2**63, 2**70),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=6)


@settings(max_examples=500, deadline=None)
@given(name=st.text(max_size=8), line=st.integers(1, 10**9), timestamp=timestamps,
       fields=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
@example(name="", line=1, timestamp="2026-11-01T10:00:00Z", fields={"m": {"b": 1e16, "a": [0.5, -0.0, 1e-07]}})
@example(name="", line=1, timestamp="2026-11-01T10:00:00Z", fields={"\u00e9": "\u2028\x00\x7f\"\\", "a": 2**64})
def test_derived_ids_are_the_documented_rule_for_every_line(name, line, timestamp, fields):
    # the canonical JSON is orjson's where it writes json's text (this environment has the extra), else json's
    assert jsonl._orjson is not None
    event = {**fields, "timestamp": timestamp}
    namespace = id_namespace(name)
    derived = derive_event_id(namespace, line, event)
    assert derived == documented_rule(namespace, line, event)
    assert uuid.UUID(derived).version == 8 and uuid.UUID(derived).variant == uuid.RFC_4122


@settings(max_examples=100, deadline=None)
@given(timestamp=timestamps)
def test_the_time_part_is_the_documented_rules_for_every_timestamp(timestamp):
    """Twice: the second reading of a plain timestamp takes its minute from the cache."""
    assert event_time_ms(timestamp) == event_time_ms(timestamp) == documented_time_ms(timestamp)


@pytest.mark.parametrize("orjson", [True, False])
def test_a_line_with_a_lone_surrogate_fails_as_the_documented_rule_does(monkeypatch, orjson):
    # json.loads accepts "\ud800"; the documented rule then cannot encode its canonical text
    if not orjson:
        monkeypatch.setattr(jsonl, "_orjson", None)
    event = {"metadata": {"k": "\ud800"}, "timestamp": "2026-11-01T10:00:00Z"}
    with pytest.raises(UnicodeEncodeError):
        documented_rule(id_namespace(), 1, event)
    with pytest.raises(UnicodeEncodeError):
        derive_event_id(id_namespace(), 1, event)


@settings(max_examples=100, deadline=None)
@given(line=st.integers(1, 10**9), fields=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_without_orjson_the_ids_are_the_same(line, fields):
    event = {**fields, "timestamp": "2026-11-01T10:00:00.5Z"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonl, "_orjson", None)
        without = derive_event_id(id_namespace(), line, event)
    assert without == derive_event_id(id_namespace(), line, event) == documented_rule(id_namespace(), line, event)
