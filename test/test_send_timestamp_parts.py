"""`send` keeps the head ("YYYY-MM-DDTHH:MM:SS") and the tail ("Z", ".<digits>Z") of the plain UTC timestamps it
has read, for the derived id's time part (`jsonl.event_time_ms`) and for the text the direct writer writes
(`event_json._timestamp_text`), and answers a timestamp whose head and tail it knows from those without its
regular expression. Any head with any tail must give what the rules give a timestamp never seen before."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from openmonetize.cli import jsonl
from openmonetize.lib import event_json
from openmonetize.models import CustomEvent

SETTINGS = settings(max_examples=100, deadline=None)


def digits(n: int, low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda value: f"{value:0{n}d}")


# heads around the plain ones' (impossible dates, hour 24, second 60, year 0) and tails of 0 to 10 fraction digits
heads = st.builds(lambda y, mo, d, h, mi, s: f"{y}-{mo}-{d}T{h}:{mi}:{s}", st.sampled_from(["0000", "0001", "1969",
                  "2024", "2026", "9999"]), digits(2, 0, 13), digits(2, 0, 31), digits(2, 0, 24), digits(2, 0, 59),
                  digits(2, 0, 60))
tails = st.one_of(st.just("Z"), st.text("0123456789", min_size=1, max_size=10).map(lambda f: f".{f}Z"),
                  st.sampled_from(["", ".Z", "z", "+00:00", "Z\n", ".5", "\uff15Z"]))


def fresh_time_ms(timestamp: str) -> int:
    """`event_time_ms` with nothing kept: the general rule, clamped."""
    return min(max(jsonl._unclamped_ms(timestamp), 0), (1 << 48) - 1)


def model_text(timestamp: str) -> str | None:
    """What the model writes for this timestamp, None if it refuses it."""
    try:
        event = CustomEvent(customer_id="c", feature_id="f", unit_type="u", quantity=1, timestamp=timestamp)
    except ValueError:
        return None
    text: str = json.loads(event.__pydantic_serializer__.to_json(event))["timestamp"]
    return text


@SETTINGS
@given(seen=st.lists(st.tuples(heads, tails), min_size=1, max_size=6), head=st.integers(0, 5), tail=st.integers(0, 5))
def test_a_known_head_with_a_known_tail_gives_the_rules_time(seen: list[tuple[str, str]], head: int,
                                                             tail: int) -> None:
    for h, t in seen:
        assert jsonl.event_time_ms(h + t) == fresh_time_ms(h + t)
    mixed = seen[head % len(seen)][0] + seen[tail % len(seen)][1]  # a head and a tail seen apart
    assert jsonl.event_time_ms(mixed) == fresh_time_ms(mixed)


@SETTINGS
@given(seen=st.lists(st.tuples(heads, tails), min_size=1, max_size=6), head=st.integers(0, 5), tail=st.integers(0, 5))
def test_a_known_head_with_a_known_tail_is_written_as_the_model_writes_it(seen: list[tuple[str, str]], head: int,
                                                                          tail: int) -> None:
    def check(timestamp: str) -> None:
        written = event_json._timestamp_text(timestamp)
        if written is not None:  # (None: the model decides, whatever it makes of it)
            assert written == model_text(timestamp)

    for h, t in seen:
        check(h + t)
    check(seen[head % len(seen)][0] + seen[tail % len(seen)][1])


def test_an_impossible_date_stays_with_the_model_after_its_time_of_day_and_tail_were_seen() -> None:
    assert event_json._timestamp_text("2026-02-28T10:00:00.050Z") == "2026-02-28T10:00:00.050000Z"
    assert event_json._timestamp_text("2026-02-29T10:00:00.050Z") is None  # not a calendar date
    assert event_json._timestamp_text("2026-02-28T24:00:00.050Z") is None  # hour 24
    assert jsonl.event_time_ms("2026-11-01T10:00:00.050Z") == 1793527200050
    assert jsonl.event_time_ms("2026-11-01T10:00:00.05Z") == jsonl.event_time_ms("2026-11-01T10:00:00.050Z")
    assert jsonl.event_time_ms("2026-11-01T10:00:00.050+01:00") == 1793527200050 - 3_600_000  # not a plain tail


def test_what_is_kept_is_bounded() -> None:
    for second in range(10_050):
        stamp: Any = f"2026-11-01T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.{second % 1000:03d}Z"
        jsonl.event_time_ms(stamp)
        event_json._timestamp_text(stamp)
    assert len(jsonl._second_ms) <= 10_001 and len(jsonl._fraction_ms) <= 10_001
    assert len(event_json._plain_heads) <= 10_001 and len(event_json._tail_texts) <= 10_001
