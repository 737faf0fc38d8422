"""The fast path (`lib/event_json.py`) against the generated models it reads its rules from (issue 14).

`encode` never refuses: it writes the JSON or answers None, and then the model decides (and names the field,
value and rule as always). So "both refuse with the same field named" holds by construction, and what the
property test pins is the other half: whenever `encode` answers, the model accepts the same values and
serializes them to the same bytes. A second test shows the common case does take the fast path.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from openmonetize import OpenMonetize
from openmonetize.lib import event_ids, event_json, event_rules
from openmonetize.lib.event_ids import id_and_timestamp, new_event_id, utc_datetime, utc_text
from openmonetize.lib.event_types import EVENT_MODELS
from openmonetize.models import CustomEvent, ImageGenerationEvent, TokenUsageEvent

PLANS = {model: event_json.plan_for(model) for model in EVENT_MODELS}
INT64_MAX = 2**63 - 1
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class StrSubclass(str):
    pass


def model_json(model: type[BaseModel], values: dict[str, Any]) -> bytes:
    event = model(**values)
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


# --- what a caller might pass, valid or not -----------------------------------------------------------

def texts(high: int) -> st.SearchStrategy[Any]:
    edge = st.sampled_from(["", "a" * high, "a" * (high + 1), "é" * high, "\ud800", "x\x00\x1f\x7f\"\\/\u2028"])
    return st.one_of(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=12), edge,
        st.text(st.characters(), max_size=6),  # surrogates and every other code point
        st.builds(StrSubclass, st.just("cust")), st.integers(0, 9), st.just(b"bytes"), st.none(),
    )


counts = st.one_of(st.integers(0, 10**6), st.sampled_from([-1, 0, 1, INT64_MAX, INT64_MAX + 1, 2**64]),
                   st.booleans(), st.just(1.0), st.just("5"), st.none())
plain = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=8),
                  st.floats(), st.just(Decimal("1.5")), st.just(datetime(2026, 1, 1)), st.just((1, 2)))
metadata_values = st.one_of(
    st.none(), st.dictionaries(st.text(max_size=6), plain, max_size=6),
    st.dictionaries(st.text(max_size=4), st.lists(plain, max_size=3) | st.dictionaries(st.text(max_size=3), plain),
                    max_size=3),
    st.dictionaries(st.integers(0, 3), st.integers(), min_size=1, max_size=2),  # keys that are not str
    st.just({f"k{i}": i for i in range(51)}), st.just({"big": "x" * 4100}), st.just({"big": "é" * 2047}),
    st.just([("a", 1)]),
)
quantities = st.one_of(st.integers(-2, 10**6), st.floats(), st.sampled_from([10**400, 0.0, -0.0, 5e-324, 1e16]),
                       st.just(Decimal("2")), st.booleans(), st.just("3"), st.none())
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "customer_id": texts(256), "user_id": texts(256), "team_id": texts(256), "feature_id": texts(256),
    "provider": texts(128), "model": texts(256), "image_size": texts(64), "quality": texts(64),
    "unit_type": texts(128), "input_tokens": counts, "output_tokens": counts, "cached_input_tokens": counts,
    "reasoning_tokens": counts, "image_count": counts, "quantity": quantities, "metadata": metadata_values,
    "event_id": st.one_of(st.none(), st.none(), texts(128)),
    "timestamp": st.one_of(st.none(), st.none(), st.just(datetime(2026, 1, 1, tzinfo=timezone.utc)),
                           st.just("2026-01-01T00:00:00Z")),
}


plain_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
plain_counts = st.integers(0, INT64_MAX)


@st.composite
def common_values(draw: st.DrawFn) -> tuple[type[BaseModel], dict[str, Any]]:
    """What `track_*` and the LLM tracker pass nearly always: exact str and int, flat metadata, no id or time."""
    model = draw(st.sampled_from(EVENT_MODELS))
    values: dict[str, Any] = {"customer_id": draw(plain_text), "feature_id": draw(plain_text),
                              "user_id": draw(st.none() | plain_text), "team_id": draw(st.none() | plain_text),
                              "metadata": draw(st.none() | st.dictionaries(plain_text, st.none() | st.booleans()
                                                                           | plain_counts | plain_text,
                                                                           max_size=10))}
    if model is TokenUsageEvent:
        values.update(provider=draw(plain_text), model=draw(plain_text), input_tokens=draw(plain_counts),
                      output_tokens=draw(plain_counts))
        values["cached_input_tokens"] = draw(st.none() | st.integers(0, values["input_tokens"]))
        values["reasoning_tokens"] = draw(st.none() | st.integers(0, values["output_tokens"]))
    elif model is ImageGenerationEvent:
        values.update(provider=draw(plain_text), model=draw(plain_text), image_count=draw(st.integers(1, 10)),
                      image_size=draw(st.none() | st.text(min_size=1, max_size=20)))
    else:
        values.update(unit_type=draw(plain_text), quantity=draw(
            st.integers(1, 10**9) | st.floats(min_value=0, exclude_min=True, allow_infinity=False)))
    return model, values


@st.composite
def values_for(draw: st.DrawFn) -> tuple[type[BaseModel], dict[str, Any]]:
    """A common event with one to three fields replaced by anything (or removed), and sometimes an unknown key
    or another event_type: the values next to the fast path's edge are the ones worth trying."""
    model, values = draw(common_values())
    names = [name for name in model.model_fields if name != "event_type"]
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)):
        if draw(st.integers(0, 9)) == 0:
            values.pop(name, None)
        else:
            values[name] = draw(FIELDS[name])
    event_type = draw(st.sampled_from([None, "absent", model.model_fields["event_type"].default, "CUSTOM", 7]))
    if event_type != "absent":
        values["event_type"] = event_type
    if draw(st.integers(0, 19)) == 0:
        values["unknown"] = 1
    return model, values


instants = st.integers(0, 4102444800 * 10**9)  # nanoseconds from 1970 to 2100


@SETTINGS
@given(case=values_for(), now_ns=instants)
@example(case=(TokenUsageEvent, {"customer_id": "c", "feature_id": "f", "provider": "p", "model": "m",
                                 "input_tokens": 1, "output_tokens": 2, "reasoning_tokens": 3}), now_ns=0)
@example(case=(CustomEvent, {"customer_id": "c", "feature_id": "f", "unit_type": "u", "quantity": 1e16}),
         now_ns=1_000_000_000_000_001_000)
def test_whenever_the_fast_path_answers_the_model_agrees_byte_for_byte(
        case: tuple[type[BaseModel], dict[str, Any]], now_ns: int) -> None:
    model, values = case
    plan = PLANS[model]
    assert plan is not None
    answer = event_json.encode(plan, dict(values), now_ns)
    if answer is None:
        return  # the model decides (and the callers build it); nothing to compare
    event_id, body = answer
    given = dict(values, event_id=event_id, timestamp=values.get("timestamp") or utc_datetime(now_ns))
    try:
        expected = model_json(model, given)
    except ValidationError as exc:
        pytest.fail(f"the fast path wrote {body!r} for values the model refuses: {exc}")
    assert body == expected
    if values.get("event_id") is None:
        parsed = uuid.UUID(event_id)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert parsed.int >> 80 == now_ns // 1_000_000  # the id's milliseconds are the timestamp's


@SETTINGS
@given(case=common_values(), now_ns=instants)
def test_the_common_case_takes_the_fast_path_and_matches_the_model(
        case: tuple[type[BaseModel], dict[str, Any]], now_ns: int) -> None:
    model, values = case
    plan = PLANS[model]
    assert plan is not None
    answer = event_json.encode(plan, dict(values), now_ns)
    assert answer is not None, values
    assert answer[1] == model_json(model, dict(values, event_id=answer[0], timestamp=utc_datetime(now_ns)))


flat_values = st.one_of(st.text(st.characters(), max_size=8), st.integers(-(2**80), 2**80), st.booleans(), st.none())


@settings(SETTINGS, max_examples=100)
@given(metadata=st.dictionaries(st.text(st.characters(), max_size=8), flat_values, max_size=8))
@example(metadata={"feature": "chat", "response_id": "chatcmpl-1"})  # the LLM tracker's
@example(metadata={"a\x00\x1f\x7f\"\\/\u2028é": "\x00\x1f\x7f\"\\/\u2028é\b\f\n\r\t", "n": -(2**70), "t": True})
@example(metadata={"a": "\ud800"})
@example(metadata={"big": "x" * 4100})
def test_flat_metadata_is_encoded_once_the_rules_text_is_the_models(metadata: dict[str, Any]) -> None:
    """Metadata of str keys and exact str, int, bool or None values: the JSON the metadata rules encode to
    measure it (`event_rules.check_metadata`, the json C encoder) is byte for byte what the models' serializer
    writes, so the fast path writes that text instead of encoding the dict a second time. When the rules refuse
    it (too big, not UTF-8), the model refuses it too."""
    values = {"customer_id": "c", "feature_id": "f", "provider": "p", "model": "m", "input_tokens": 1,
              "output_tokens": 1, "metadata": metadata, "event_id": "e", "timestamp": utc_datetime(0)}
    try:
        text = event_json._metadata_json(metadata)
    except Exception:
        with pytest.raises(Exception):  # noqa: B017 (building refuses it, or serializing does: not UTF-8)
            model_json(TokenUsageEvent, values)
        return
    assert text == event_rules.check_metadata(metadata)  # the rules' own text, not another encoding
    assert f',"metadata":{text},'.encode() in model_json(TokenUsageEvent, values)


def test_every_event_model_has_a_plan() -> None:
    """A spec change the plan does not understand must be seen here, not only as a slower track()."""
    assert all(PLANS.values()), PLANS


def test_a_model_with_a_rule_the_plan_cannot_read_gets_no_plan() -> None:
    """An unknown constraint (a pattern here) turns the fast path off for that model instead of ignoring it."""
    from typing import Annotated, Literal

    from pydantic import ConfigDict, Field

    class Patterned(BaseModel):
        model_config = ConfigDict(extra="forbid")
        event_type: Literal["X"] = "X"
        customer_id: Annotated[str, Field(strict=True, pattern="^c")]

    assert event_json.plan_for(Patterned) is None


def test_a_model_whose_sdk_validators_apply_other_rules_gets_no_plan() -> None:
    """The plan applies `prepare_event` and `check_fields`; validators under the same names that call other
    rules (a spec change to `x-sdk-validators`) turn the fast path off rather than being skipped."""
    from typing import Annotated, Literal

    from pydantic import ConfigDict, Field, model_validator

    def other_rule(value: Any) -> Any:
        return value

    class Other(BaseModel):
        model_config = ConfigDict(extra="forbid")
        event_type: Literal["X"] = "X"
        event_id: Annotated[str, Field(strict=True, min_length=1, max_length=128)]
        customer_id: Annotated[str, Field(strict=True, min_length=1, max_length=256)]

        @model_validator(mode="before")
        @classmethod
        def _sdk_before(cls, data: Any) -> Any:
            return other_rule(data)

        @model_validator(mode="after")
        def _sdk_after(self) -> Any:
            return other_rule(self)

        @model_validator(mode="before")
        @classmethod
        def _refuse_unknown_fields(cls, data: Any) -> Any:
            return data

    assert event_json.plan_for(Other) is None


@pytest.mark.parametrize("now_ns", [0, 1, 999, 1_000, 1_764_604_800_123_456_789, 1_764_604_800_000_000_999])
def test_the_timestamp_text_is_the_models(now_ns: int) -> None:
    event = TokenUsageEvent(customer_id="c", feature_id="f", provider="p", model="m", input_tokens=0,
                            output_tokens=0, timestamp=utc_datetime(now_ns))
    assert f'"timestamp":"{utc_text(now_ns)}"'.encode() in event.__pydantic_serializer__.to_json(event)


def test_an_id_and_timestamp_made_together_share_one_clock_reading() -> None:
    event = TokenUsageEvent(customer_id="c", feature_id="f", provider="p", model="m", input_tokens=0, output_tokens=0)
    millis = uuid.UUID(event.event_id).int >> 80
    assert event.timestamp == datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=millis)


def test_ids_sort_by_time_and_keep_their_layout() -> None:
    base = 1_764_604_800_000_000_000
    ids = [new_event_id(base + step * 1_000_000) for step in range(2000)]
    assert ids == sorted(ids)
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert len(set(new_event_id(base) for _ in range(10_000))) == 10_000
    # the default timestamp is the id's millisecond
    assert utc_datetime(base + 123_456_789) == datetime(2025, 12, 1, 16, 0, 0, 123000, tzinfo=timezone.utc)
    assert utc_text(base + 123_456_789) == "2025-12-01T16:00:00.123000Z" and utc_text(base) == "2025-12-01T16:00:00Z"


def test_a_millisecond_s_first_id_and_those_after_it_count_up_from_one_random_start() -> None:
    """A new millisecond's first id is made alone (no iterator: the LLM tracker's usual case); the second id
    of it starts the counter just after the first, and a timestamp asked for first gives no id away."""
    moment = 1_764_604_800_000_000_000 + 7_000_000
    assert utc_text(moment) == "2025-12-01T16:00:00.007000Z"  # the millisecond begins without an id taken
    ids = [new_event_id(moment) for _ in range(5)] + [id_and_timestamp(moment)[0] for _ in range(5)]
    assert len(set(ids)) == 10 and ids == sorted(ids)
    assert {i[:24] for i in ids} == {ids[0][:24]}  # one random prefix
    assert [int(i[24:], 16) - int(ids[0][24:], 16) for i in ids] == list(range(10))  # counting up by one
    later = moment + 1_000_000
    first, text = id_and_timestamp(later)  # a new millisecond, its first id
    assert text == "2025-12-01T16:00:00.008000Z" and first[:24] != ids[0][:24]
    assert int(new_event_id(later)[24:], 16) == int(first[24:], 16) + 1


def test_threads_asking_for_ids_of_the_same_milliseconds_at_once_never_share_one() -> None:
    """Threads asking for ids of the same few milliseconds at once, switching as often as the interpreter lets
    them: every id is still unique and of its own millisecond."""
    base = 1_764_604_800_000_000_000
    barrier = threading.Barrier(4)
    made: list[list[tuple[int, str]]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        barrier.wait()
        for step in range(3000):
            now = base + (step // 2 + k % 2) * 1_000_000  # two threads a millisecond behind the others
            made[k].append((now // 1_000_000, new_event_id(now) if step % 2 else id_and_timestamp(now)[0]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # as many thread switches as the interpreter makes
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    everything = [pair for pairs in made for pair in pairs]
    assert len(everything) == 12_000 and len({i for _, i in everything}) == 12_000
    assert all(uuid.UUID(i).int >> 80 == millis for millis, i in everything)


def test_a_thread_late_for_a_millisecond_s_counter_takes_the_next_id_not_a_new_counter() -> None:
    """The race the lock is for, played in order: a thread saw the millisecond without its counter, another
    made the counter meanwhile; the late one must count on, not start the counter again."""
    millis = 1_764_604_800_009
    first = new_event_id(millis * 1_000_000)  # a new millisecond: its first id, no counter yet
    second = new_event_id(millis * 1_000_000)  # the counter made (by "another thread")
    late = event_ids._next_of(millis)[0]  # the thread that saw no counter arrives
    assert [int(i[24:], 16) - int(first[24:], 16) for i in (first, second, late)] == [0, 1, 2]
    assert new_event_id(millis * 1_000_000) > late


def test_a_child_forked_within_a_millisecond_does_not_continue_its_parents_ids() -> None:
    """Ids count up within a millisecond from a random start: a child that kept the parent's state would make
    the very ids the parent makes next, in the same millisecond."""
    import json
    import os

    moment = 1_764_604_800_123_456_789
    first = new_event_id(moment)  # the parent is inside this millisecond when it forks
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        os.write(write_fd, json.dumps([new_event_id(moment) for _ in range(100)]).encode())
        os._exit(0)
    os.close(write_fd)
    parent_ids = {new_event_id(moment) for _ in range(100)}
    with os.fdopen(read_fd) as pipe:
        child_ids = set(json.loads(pipe.read()))
    os.waitpid(pid, 0)
    assert len(child_ids) == 100 and first not in child_ids
    assert not parent_ids & child_ids
    assert all(uuid.UUID(i).int >> 80 == moment // 1_000_000 for i in parent_ids | child_ids)


def test_a_forked_child_never_begins_a_millisecond_as_its_parent_does() -> None:
    """A new millisecond's first id ends in a random text made ahead (64 at a time): a child that kept the
    parent's unused ones would begin the next milliseconds with the very ids the parent begins them with."""
    import json
    import os

    base = 1_764_604_800_000_000_000 + 500_000_000
    new_event_id(base)  # the parent has made ends ahead, and used one
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        os.write(write_fd, json.dumps([new_event_id(base + step * 1_000_000) for step in range(1, 11)]).encode())
        os._exit(0)
    os.close(write_fd)
    parent_ids = [new_event_id(base + step * 1_000_000) for step in range(1, 11)]
    with os.fdopen(read_fd) as pipe:
        child_ids = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert len(child_ids) == 10 and not set(parent_ids) & set(child_ids)


def test_track_calls_on_the_fast_path_reach_a_server_as_the_models_would_send_them() -> None:
    """End to end over loopback: what `track_*` wrote directly is what the model of the same values sends."""
    import json

    from openmonetize import OpenMonetize
    from openmonetize.testing import LocalIngestServer

    text = 'q"\\\n\t\x01 é 雪 \U0001f600 \u2028'
    calls: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
        ("track_token_usage", TokenUsageEvent, dict(customer_id=text, feature_id="chat", provider="openai",
                                                    model="gpt-4o", input_tokens=INT64_MAX, output_tokens=7,
                                                    cached_input_tokens=3, reasoning_tokens=7, user_id="u",
                                                    metadata={"response_id": "r", "partial": True, "n": None})),
        ("track_image_generation", ImageGenerationEvent, dict(customer_id="c", feature_id="img", provider="openai",
                                                              model="gpt-image-1", image_count=2, quality=text)),
        ("track_custom_event", CustomEvent, dict(customer_id="c", feature_id="pages", unit_type="pages",
                                                 quantity=0.1, team_id="t")),
        ("track_custom_event", CustomEvent, dict(customer_id="c", feature_id="pages", unit_type="pages",
                                                 quantity=10**300)),
    ]
    for _, model, values in calls:
        assert event_json.encode(PLANS[model] or pytest.fail(), dict(values)) is not None  # the fast path
    with LocalIngestServer(api_key="k") as server:
        om = OpenMonetize(api_key="k", base_url=server.url, flush_interval=0.01)
        ids = [getattr(om, method)(**values) for method, _, values in calls]
        assert om.flush(30) is True
        om.shutdown(5)
        stored = {event["event_id"]: event for event in server.events}
    for event_id, (_, model, values) in zip(ids, calls, strict=True):
        sent = stored[event_id]
        built = model(**values, event_id=event_id, timestamp=sent["timestamp"])
        assert sent == json.loads(built.__pydantic_serializer__.to_json(built, exclude_none=True))
        moment = datetime.fromisoformat(sent["timestamp"].replace("Z", "+00:00"))
        assert uuid.UUID(event_id).int >> 80 == (moment - utc_datetime(0)) // timedelta(milliseconds=1)


@pytest.mark.parametrize("field, value", [("event_id", ""), ("timestamp", ""), ("event_id", "x" * 129)])
def test_dump_leaves_a_bad_id_or_timestamp_to_the_model_never_replaces_it(field: str, value: str) -> None:
    """Only None means "make one": an empty or too long id, or an empty timestamp, is refused by name."""
    values = {"customer_id": "c", "feature_id": "f", "provider": "p", "model": "m", "input_tokens": 1,
              "output_tokens": 1, field: value}
    with pytest.raises(ValidationError, match=field):
        event_json.dump(TokenUsageEvent, values, 1_764_604_800_000_000_000)


class Queue:
    """What a compiled `track_*` method passes on, kept instead of queued (`self` for `OpenMonetize`'s own
    methods: they only call `self._enqueue_json`)."""

    def _enqueue_json(self, event_id: str, body: bytes) -> tuple[str, bytes]:
        return event_id, body


TRACK_METHODS: dict[type[BaseModel], Any] = {
    TokenUsageEvent: OpenMonetize.track_token_usage, ImageGenerationEvent: OpenMonetize.track_image_generation,
    CustomEvent: OpenMonetize.track_custom_event}


def _outcome(call: Any, values: dict[str, Any]) -> tuple[str, Any]:
    try:
        event_id, body = call()
    except ValidationError as exc:
        return "refused", [(error["loc"], error["type"], error["msg"]) for error in exc.errors()]
    event = json.loads(body)
    assert event["event_id"] == event_id
    for made in ("event_id", "timestamp"):
        if values.get(made) is None:
            event[made] = "<made>"  # each made from its own clock reading
    return "written", event


@settings(SETTINGS, max_examples=200)
@given(case=values_for())
def test_the_track_methods_answer_as_dump_does(case: tuple[type[BaseModel], dict[str, Any]]) -> None:
    """The compiled `track_*` methods (`event_json.method`) run the same checks on their keyword arguments:
    for any arguments they pass on what `dump` writes for the same values (an argument not given is its
    default, None but for `image_count`), or the model refuses them with the same errors. (A required
    argument left out is refused by the call itself.)"""
    model, values = case
    values = {name: value for name, value in values.items() if name not in ("event_type", "unknown")}
    method = TRACK_METHODS[model]
    if not set(inspect.signature(method).parameters) - set(method.__kwdefaults__) - {"self"} <= set(values):
        with pytest.raises(TypeError, match="required keyword-only argument"):
            method(Queue(), **values)  # a required argument left out: Python refuses the call, as before
        return
    every = {**method.__kwdefaults__, **values}
    tracked = _outcome(lambda: method(Queue(), **values), every)
    assert tracked == _outcome(lambda: event_json.dump(model, every, time.time_ns()), every)


def test_a_compiled_track_method_is_its_declaration_to_every_reader() -> None:
    """Signature, defaults, documentation and name are the declaration's; its body is the compiled one."""
    for method in TRACK_METHODS.values():
        declared = method.__wrapped__
        assert inspect.signature(method) == inspect.signature(declared) and method.__doc__ == declared.__doc__
        assert method.__name__ == declared.__name__ and method.__code__ is not declared.__code__
        assert method.__kwdefaults__ == declared.__kwdefaults__
    assert OpenMonetize.track_image_generation.__kwdefaults__["image_count"] == 1  # type: ignore[index]


def test_the_track_methods_take_the_fast_path_for_the_common_case() -> None:
    """Declining to the model shows in the id: a model-built event's id is made by `_built`, after the
    fast path's own, so two common calls in one millisecond get consecutive ids only on the fast path."""
    values = {"customer_id": "c", "feature_id": "f", "provider": "p", "model": "m", "input_tokens": 1,
              "output_tokens": 1}
    track = TRACK_METHODS[TokenUsageEvent]
    for _ in range(100):  # (two calls in one millisecond, nearly always at the first try)
        first, _ = track(Queue(), **values)
        second, _ = track(Queue(), **values)
        if first[:24] == second[:24]:
            break
    assert int(second.replace("-", ""), 16) == int(first.replace("-", ""), 16) + 1  # one id per call: no model


def test_queueing_runs_once_and_what_it_raises_is_the_callers() -> None:
    """The compiled method queues outside its checks: an error from the queue is not taken for a value the
    model must decide, so it neither queues the event a second time nor turns into another error."""
    calls: list[str] = []

    class Refusing:
        def _enqueue_json(self, event_id: str, body: bytes) -> str:
            calls.append(event_id)
            raise RuntimeError("this OpenMonetize client is shut down")

    with pytest.raises(RuntimeError, match="shut down"):
        TRACK_METHODS[TokenUsageEvent](Refusing(), customer_id="c", feature_id="f", provider="p", model="m",
                                       input_tokens=1, output_tokens=1)
    assert len(calls) == 1


def test_track_metadata_a_mapping_is_sent_as_its_dict_and_pairs_are_refused_not_converted() -> None:
    """`track_*` take any `Mapping` as metadata (the model reads it); a list of pairs is not a mapping and is
    refused by name, not turned into one (it was, while `track_*` called `dict()` on it)."""
    from types import MappingProxyType

    from openmonetize.testing import LocalIngestServer

    with LocalIngestServer(api_key="k") as server:
        om = OpenMonetize(api_key="k", base_url=server.url, flush_interval=0.01)
        usage: dict[str, Any] = dict(customer_id="c", feature_id="f", provider="p", model="m", input_tokens=1,
                                     output_tokens=1)
        sent = om.track_token_usage(**usage, metadata=MappingProxyType({"a": 1}))
        with pytest.raises(ValidationError, match="metadata"):
            om.track_token_usage(**usage, metadata=[("a", 1)])  # type: ignore[arg-type]
        assert om.flush(30) is True
        om.shutdown(5)
        assert [(event["event_id"], event["metadata"]) for event in server.events] == [(sent, {"a": 1})]


def test_a_traceback_through_a_compiled_track_method_shows_its_lines() -> None:
    """The generated code's lines are kept for tracebacks and debuggers: a refused event's traceback shows
    the compiled method's line, not a frame without source."""
    import traceback

    with pytest.raises(ValidationError) as refused:
        TRACK_METHODS[TokenUsageEvent](Queue(), customer_id="", feature_id="f", provider="p", model="m",
                                       input_tokens=1, output_tokens=1)
    frames = [frame for frame in traceback.extract_tb(refused.tb) if frame.filename.startswith("<event_json")]
    assert frames and frames[0].line and "_built(_model" in frames[0].line


def test_without_a_plan_a_track_method_builds_the_model_with_the_declarations_defaults(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A model the plan cannot read (a spec change) still gets a working method: the model decides, and an
    argument left out takes the declaration's default (`image_count=1`), as the compiled method does."""
    plans: dict[Any, Any] = event_json.PLANS
    monkeypatch.setitem(plans, ImageGenerationEvent, None)
    declared = OpenMonetize.track_image_generation.__wrapped__  # type: ignore[attr-defined]
    track: Any = event_json.method(ImageGenerationEvent, "_enqueue_json")(declared)
    event_id, body = track(Queue(), customer_id="c", feature_id="f", provider="p", model="m")
    assert json.loads(body)["image_count"] == 1 and json.loads(body)["event_id"] == event_id
    with pytest.raises(ValidationError, match="customer_id"):
        track(Queue(), customer_id="", feature_id="f", provider="p", model="m")


WRITERS = {model: event_json.writer(model) for model in EVENT_MODELS}


@settings(SETTINGS, max_examples=100)
@given(case=values_for(), now_ns=instants)
def test_the_keyword_writer_answers_as_dump_does(case: tuple[type[BaseModel], dict[str, Any]], now_ns: int) -> None:
    """`event_json.writer` (what the LLM tracker calls) runs the same checks and writing on keyword arguments:
    for any values (a field not given is None) it writes what `dump` writes for the same values, from the same
    clock reading, or the model refuses them with the same errors."""
    model, values = case
    values = {name: value for name, value in values.items() if name not in ("event_type", "unknown")}
    every = {name: values.get(name) for name in model.model_fields if name != "event_type"}
    written = _outcome(lambda: WRITERS[model](now_ns, **values), every)
    assert written == _outcome(lambda: event_json.dump(model, every, now_ns), every)
    if written[0] == "written" and values.get("timestamp") is None:  # the timestamp is `now_ns`'s
        assert f'"timestamp":"{utc_text(now_ns)}"'.encode() in WRITERS[model](now_ns, **values)[1]


# --- bound writers: the constant part of many events written once (the LLM tracker's wrap) -------------

BINDABLE = {model: [field.name for field in plan.fields if field.kind in (event_json._TEXT, event_json._COUNT,
                                                                           event_json._NUMBER)]
            for model, plan in PLANS.items() if plan is not None}
METADATA_KEYS = ["response_id", "feature", "é\"\n\x00\u2028", "k"]
key_values = st.one_of(
    texts(200), st.text(st.characters(), max_size=4),
    st.builds(lambda char, n: char * n, st.sampled_from(["x", "é", "\n", "\x00", "😀"]), st.integers(0, 4100)),
    st.integers(), st.none(), st.builds(StrSubclass, st.just("r")),
)


@st.composite
def bound_cases(draw: st.DrawFn) -> tuple[type[BaseModel], dict[str, Any], list[str], dict[str, Any]]:
    """A model's text, count and number fields split at random into constants and parameters (those of the
    cross-field rules always parameters), zero to two metadata keys added per event, the values near the fast
    path's edge (`values_for`), the parameters in any order."""
    model, values = draw(values_for())
    constants: dict[str, Any] = {}
    parameters: list[str] = []
    for name in BINDABLE[model]:
        if name in event_json._RULE_FIELDS or draw(st.booleans()):
            parameters.append(name)
        else:
            constants[name] = values.get(name)
    keys = draw(st.lists(st.sampled_from(METADATA_KEYS), unique=True, max_size=2))
    if draw(st.booleans()):
        constants["metadata"] = values.get("metadata")
    parameters = draw(st.permutations(parameters + [f"metadata.{key}" for key in keys]))
    arguments = {name: draw(key_values) if name.startswith("metadata.") else values.get(name) for name in parameters}
    return model, constants, parameters, arguments


def bound_fields(constants: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """The event's fields as the model takes them: the metadata keys after the constant metadata's."""
    fields = {**constants, **{name: value for name, value in arguments.items() if not name.startswith("metadata.")}}
    keys = {name[len("metadata."):]: value for name, value in arguments.items() if name.startswith("metadata.")}
    if keys:
        base = constants.get("metadata")
        fields["metadata"] = {**(base if isinstance(base, dict) else {}), **keys}
    return fields


@settings(SETTINGS, max_examples=100)
@given(case=bound_cases(), now_ns=instants)
@example(case=(TokenUsageEvent, {"customer_id": "c", "feature_id": "f", "provider": "p", "metadata": {"a": 1}},
               ["model", "metadata.response_id", "input_tokens", "output_tokens", "cached_input_tokens",
                "reasoning_tokens"], {"model": "m", "metadata.response_id": "r", "input_tokens": 1,
                                      "output_tokens": 2, "cached_input_tokens": 2, "reasoning_tokens": 3}), now_ns=0)
def test_whenever_a_bound_writer_answers_the_model_agrees_byte_for_byte(
        case: tuple[type[BaseModel], dict[str, Any], list[str], dict[str, Any]], now_ns: int) -> None:
    """A bound writer answers (id, JSON) or None (then `writer` on every field decides, and the model names what
    breaks a rule): whenever it answers, the model accepts the same fields and writes the same bytes, and the
    id and timestamp are `now_ns`'s."""
    model, constants, parameters, arguments = case
    writer = event_json.bound(model, constants, parameters)
    if writer is None:
        return  # the constants are beyond it: every event is the writer's
    answer = writer(now_ns, *[arguments[name] for name in parameters])
    if answer is None:
        return
    event_id, body = answer
    fields = bound_fields(constants, arguments)
    try:
        expected = model_json(model, dict(fields, event_id=event_id, timestamp=utc_datetime(now_ns)))
    except ValidationError as exc:
        pytest.fail(f"the bound writer wrote {body!r} for fields the model refuses: {exc}")
    assert body == expected
    assert uuid.UUID(event_id).int >> 80 == now_ns // 1_000_000


@settings(SETTINGS, max_examples=100)
@given(case=common_values(), now_ns=instants, keys=st.lists(st.sampled_from(METADATA_KEYS), unique=True, max_size=2),
       value=plain_text, split=st.integers(0, 2**16))
def test_a_bound_writer_answers_the_common_case_as_the_model_writes_it(
        case: tuple[type[BaseModel], dict[str, Any]], now_ns: int, keys: list[str], value: str, split: int) -> None:
    model, values = case
    keys = [key for key in keys if key not in (values.get("metadata") or {})]
    names = [name for name in BINDABLE[model] if name not in event_json._RULE_FIELDS]
    constants = {name: values.get(name) for i, name in enumerate(names) if split >> i & 1}
    constants["metadata"] = values.get("metadata")
    parameters = [name for name in BINDABLE[model] if name not in constants] + [f"metadata.{key}" for key in keys]
    arguments = {name: value if name.startswith("metadata.") else values.get(name) for name in parameters}
    writer = event_json.bound(model, constants, parameters)
    assert writer is not None
    answer = writer(now_ns, *arguments.values())
    assert answer is not None
    fields = bound_fields(constants, arguments)
    assert answer[1] == model_json(model, dict(fields, event_id=answer[0], timestamp=utc_datetime(now_ns)))


TRACKERS = ("model", "metadata.response_id", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")


@pytest.mark.parametrize("char", ["x", "é", "\n", "\x00", "\u2028", "😀", "\ud800"])
@pytest.mark.parametrize("base", [None, {}, {"feature": "chat", "n": 7, "é": True}])
def test_a_bound_writer_checks_the_metadata_size_by_arithmetic_at_the_rules_edge(char: str, base: Any) -> None:
    """The per-event metadata key is checked by adding its text's length in UTF-8 to the fixed part's: at
    exactly 4096 bytes the writer answers what the model writes, one byte more and it declines, as the model
    refuses (naming the metadata and its size)."""
    writer = event_json.bound(TokenUsageEvent, {"customer_id": "c", "feature_id": "f", "provider": "p",
                                                "metadata": base}, TRACKERS)
    assert writer is not None
    fixed = len(json.dumps({**(base or {}), "response_id": ""}, separators=(",", ":"), ensure_ascii=False).encode())
    per = len(json.dumps(char, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass"))
    for size in (event_rules.MAX_METADATA_JSON_BYTES, event_rules.MAX_METADATA_JSON_BYTES + 1):
        count, pad = divmod(size - fixed, per)
        value = char * count + "a" * pad
        fields: dict[str, Any] = {"customer_id": "c", "feature_id": "f", "provider": "p", "model": "m",
                                  "input_tokens": 1, "output_tokens": 1,
                                  "metadata": {**(base or {}), "response_id": value}}
        answer = writer(0, "m", value, 1, 1, None, None)
        if char == "\ud800":  # not UTF-8: the writer declines, and the model refuses it, whatever its size
            assert answer is None
            with pytest.raises(ValidationError, match="surrogates not allowed"):
                TokenUsageEvent(**fields)
        elif size > event_rules.MAX_METADATA_JSON_BYTES:
            assert answer is None
            with pytest.raises(ValidationError, match=f"metadata is {size} bytes as JSON"):
                TokenUsageEvent(**fields)
        else:
            assert answer is not None
            assert answer[1] == model_json(TokenUsageEvent, dict(fields, event_id=answer[0], timestamp=utc_datetime(0)))


def test_a_bound_writer_is_compiled_once_per_shape_and_refuses_what_it_cannot_fix() -> None:
    """Binding is per wrap: the code is compiled once per shape, the constants checked per binding. Constants
    that break a rule, metadata that is not flat or already has a per-event key, more keys than the rules
    allow: no writer (every event goes to `writer`). A shape it cannot make is a programming error."""
    constants = {"customer_id": "c", "user_id": None, "feature_id": "f", "provider": "p", "metadata": None}
    first = event_json.bound(TokenUsageEvent, constants, TRACKERS)
    compiled = len(event_json._MAKERS)
    second = event_json.bound(TokenUsageEvent, {**constants, "customer_id": "d", "user_id": "u"}, TRACKERS)
    assert first is not None and second is not None and first is not second
    assert len(event_json._MAKERS) == compiled
    written = second(0, "m", "r", 1, 1, None, None)
    assert written is not None and b'"customer_id":"d","user_id":"u"' in written[1]
    for bad in ({"customer_id": ""}, {"customer_id": "c" * 257}, {"provider": 3}, {"customer_id": StrSubclass("c")},
                {"customer_id": "\ud800"}, {"metadata": {"response_id": "fixed"}}, {"metadata": {"a": [1]}},
                {"metadata": {f"k{i}": i for i in range(event_rules.MAX_METADATA_KEYS)}},
                {"metadata": {"big": "x" * 4100}}, {"metadata": [("a", 1)]}, {"metadata": {1: 1}}):
        assert event_json.bound(TokenUsageEvent, {**constants, **bad}, TRACKERS) is None, bad
    for parameters in (("model", "event_id"), ("model", "model"), ("metadata",), ("input_tokens",)):
        with pytest.raises(ValueError):  # (`input_tokens` alone: `output_tokens` is required)
            event_json.bound(TokenUsageEvent, {**constants, "model": "m"} if "model" not in parameters else constants,
                             parameters)
    with pytest.raises(ValueError, match="constant 'input_tokens'"):
        event_json.bound(TokenUsageEvent, {**constants, "input_tokens": 1}, ("model", "output_tokens"))


def test_a_bound_writers_constants_must_be_fields_of_its_model() -> None:
    with pytest.raises(ValueError, match="not fields of TokenUsageEvent"):
        event_json.bound(TokenUsageEvent, {"customer_id": "c", "feature_id": "f", "provider": "p", "quantity": 1},
                         ("model", "input_tokens", "output_tokens"))
