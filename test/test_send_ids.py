"""The ids `openmonetize send` derives are a compatibility promise (docs/guides/cli.md): the faster formatting
of issue 14 gives, for every line, the text the documented rule gives (the 128-bit value, formatted)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from openmonetize.cli.jsonl import _canonical, derive_event_id, event_time_ms, id_namespace


def documented_rule(namespace: uuid.UUID, line: int, event: dict[str, Any]) -> str:
    """The rule as docs/guides/cli.md states it, and as every earlier version computed it."""
    digest = hashlib.sha1(namespace.bytes + f"{line}:{_canonical(event)}".encode()).digest()
    bits = int.from_bytes(digest[:10], "big")
    value = (event_time_ms(event.get("timestamp")) << 80 | 0x8 << 76 | (bits >> 68) << 64 | 0b10 << 62
             | bits & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


timestamps = st.one_of(
    st.builds(lambda y, mo, d, sep, h, mi, s, frac, off: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}"
              f"{frac}{off}",
              st.integers(0, 9999), st.integers(1, 12), st.integers(1, 31), st.sampled_from("Tt "),
              st.integers(0, 23), st.integers(0, 59), st.integers(0, 60),
              st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=10).map(lambda f: "." + f)),
              st.sampled_from(["", "Z", "z", "+02:00", "-03:30", "+14:00", "-12:00", "+2:00"])),
    st.text(max_size=30), st.none(), st.integers())
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=6)


@settings(max_examples=500, deadline=None)
@given(name=st.text(max_size=8), line=st.integers(1, 10**9), timestamp=timestamps,
       fields=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_derived_ids_are_the_documented_rule_for_every_line(name, line, timestamp, fields):
    event = {**fields, "timestamp": timestamp}
    namespace = id_namespace(name)
    derived = derive_event_id(namespace, line, event)
    assert derived == documented_rule(namespace, line, event)
    assert uuid.UUID(derived).version == 8 and uuid.UUID(derived).variant == uuid.RFC_4122
