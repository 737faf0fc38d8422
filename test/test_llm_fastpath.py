"""The plain call's shortcuts (issue 14) answer exactly as the general code they skip.

Reading usage (`field_of` / `fields_of`, a kind of object remembered per type), building an event's
fields (the consistent-counts case without `Usage.consistent`), and the proxy's routed names (properties
over the child the first access made): each is checked against the behaviour it replaced.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType, SimpleNamespace
from typing import Any

import openai
import pytest
import wrapt
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from openmonetize.lib.llm import routes
from openmonetize.lib.llm import tracker as tracker_module
from openmonetize.lib.llm import usage as u
from openmonetize.lib.llm.proxies import COMPLETED, TrackedClient, tracked_client
from openmonetize.lib.llm.routes import CLIENT_COPIES, Method
from openmonetize.lib.llm.tracker import RESPONSE_ID_NAMESPACE, TRACKER_METADATA_KEYS, Attribution, Billing, Call

_ABSENT = object()


def reference_field_of(obj: Any, name: str) -> Any:
    """`field_of` as it was before issue 14 (an ABC check on every call)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        value = fields.get(name, _ABSENT)
        if value is not _ABSENT:
            return value
        if hasattr(type(obj), "__pydantic_fields__"):
            extra = obj.__pydantic_extra__
            return extra.get(name) if extra else None
    return getattr(obj, name, None)


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    declared: int | None = None


class Closed(BaseModel):
    declared: int | None = None

    @property
    def computed(self) -> int:
        return 7


class Plain:
    def __init__(self) -> None:
        self.declared = 1

    @property
    def computed(self) -> int:
        return 2


class Slotted:
    __slots__ = ("declared",)

    def __init__(self) -> None:
        self.declared = 3


class DictLike(dict[str, Any]):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.__dict__["declared"] = "the attribute, not the key"


def objects() -> list[Any]:
    return [
        {"declared": 1, "other": 2}, MappingProxyType({"declared": 1}), DictLike({"declared": 5}),
        Open.model_validate({"declared": 1, "extra_one": 2}), Open(), Closed(declared=4), Closed(), Plain(), Slotted(),
        SimpleNamespace(declared=6), wrapt.ObjectProxy({"declared": 8}),
        wrapt.ObjectProxy(Open.model_validate({"declared": 9, "x": 1})), None, 12, "text",
    ]


@pytest.mark.parametrize("obj", objects(), ids=lambda obj: type(obj).__name__)
def test_field_of_and_fields_of_read_every_kind_of_object_as_before(obj):
    for _ in range(2):  # the first read remembers the kind of the object's type, the second uses it
        for name in ("declared", "other", "extra_one", "computed", "x", "absent", "__class__"):
            expected = reference_field_of(obj, name)
            assert u.field_of(obj, name) == expected, name
            assert u.fields_of(obj).get(name) == expected, name


def test_a_proxy_is_read_through_its_class_and_its_type_is_never_remembered():
    proxied = wrapt.ObjectProxy({"declared": 1})
    assert u.field_of(proxied, "declared") == 1
    assert type(proxied) not in u._KINDS


def test_openai_chat_usage_reads_a_dict_as_the_sdk_model():
    usage = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29, "cost": 0.25,
             "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 2, "cache_write_tokens": 3},
             "completion_tokens_details": {"reasoning_tokens": 5, "accepted_prediction_tokens": 1,
                                           "rejected_prediction_tokens": 0}}
    model = openai.types.CompletionUsage.model_validate(usage)
    expected = u.Usage(20, 9, 4, 5, {"cost": 0.25, "input_audio_tokens": 2, "cache_creation_input_tokens": 3,
                                     "accepted_prediction_tokens": 1})
    assert u.openai_chat_usage(usage) == u.openai_chat_usage(model) == expected
    assert list(u.openai_chat_usage(model).extra) == list(expected.extra)  # the metadata keys' order too


# -- an event's fields --------------------------------------------------------------------------------


def reference_fields(call: Call, observation: u.Observation, end: str) -> tuple[dict[str, Any], str]:
    """`Call._fields` as it was before issue 14."""
    billing, attribution = call.billing, call.attribution
    usage = observation.usage
    if usage is None and observation.images is None and observation.units is None:
        usage = u.Usage()
        end = end if end != COMPLETED else "no_usage"
    own: dict[str, Any] = {}
    if observation.response_id:
        response_id = observation.response_id
        own["response_id"] = response_id if len(response_id) <= 200 else \
            str(uuid.uuid5(RESPONSE_ID_NAMESPACE, response_id))
    if end != COMPLETED:
        own["partial"] = True
        own["stream_end"] = end
    provider = observation.provider or billing.provider
    requested = call.request.get("model")
    model = observation.model or (requested if isinstance(requested, str) and requested else None) or "unknown"
    fields: dict[str, Any] = {  # the event id and timestamp left out: they are the Call's, compared apart
        "customer_id": attribution.customer_id if attribution else None,
        "user_id": attribution.user_id if attribution else None,
        "team_id": billing.team_id, "feature_id": billing.feature_id,
    }
    adjusted = ""
    extra = dict(usage.extra) if usage is not None and usage.extra else {}
    if observation.images is not None:
        images = observation.images
        if usage is not None:
            extra.update(usage.as_metadata())
        fields.update(event_type="IMAGE_GENERATION", provider=provider, model=model,
                      image_count=images.count, image_size=images.size, quality=images.quality)
    elif observation.units is not None:
        units = observation.units
        own.update(provider=provider, model=model)
        fields.update(event_type="CUSTOM", unit_type=units.unit_type, quantity=units.quantity)
    else:
        assert usage is not None
        counts, adjusted = usage.consistent()
        if adjusted:
            own["usage_adjusted"] = adjusted
        fields.update(event_type="TOKEN_USAGE", provider=provider, model=model, **counts)
    if len(own) + len(extra) > TRACKER_METADATA_KEYS:
        own["usage_details"] = extra
    else:
        own.update(extra)
    metadata: dict[str, Any] = {}
    if attribution is not None and attribution.metadata:
        metadata.update(attribution.metadata)
    if billing.metadata:
        metadata.update(billing.metadata)
    metadata.update(own)
    fields["metadata"] = metadata or None
    return fields, adjusted


counts = st.one_of(st.none(), st.integers(-5, 50))
extras = st.dictionaries(st.sampled_from([f"kind_{i}_tokens" for i in range(14)]), st.integers(1, 9), max_size=12)
usages = st.builds(u.Usage, st.integers(-5, 50), st.integers(-5, 50), counts, counts, extras)
observations = st.builds(
    u.Observation,
    usage=st.one_of(st.none(), usages),
    model=st.sampled_from([None, "", "gpt-4o"]),
    response_id=st.sampled_from([None, "", "chatcmpl-1", "r" * 201]),
    images=st.one_of(st.none(), st.builds(u.Images, st.integers(1, 4), st.sampled_from([None, "1024x1024"]))),
    units=st.one_of(st.none(), st.builds(u.Units, st.just("characters"), st.integers(0, 99))),
    provider=st.sampled_from([None, "openrouter"]),
)
metadata = st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b", "response_id"]), st.integers(), max_size=3))


@given(observation=observations, end=st.sampled_from([COMPLETED, "closed", "error"]),
       scope_metadata=metadata, wrap_metadata=metadata, attributed=st.booleans(),
       requested=st.sampled_from([None, "", "gpt-4o-mini", 3]))
def test_an_events_fields_are_the_ones_the_general_code_made(observation, end, scope_metadata, wrap_metadata,
                                                             attributed, requested):
    billing = Billing(None, ContextVar("scope", default=None), provider="openai",  # type: ignore[arg-type]
                      attribution=None, metadata=wrap_metadata, feature_id="chat", team_id=None)
    attribution = Attribution("cust_1", None, scope_metadata) if attributed else None
    call = Call(billing, attribution, {"model": requested})
    fields, adjusted = call._fields(observation, end)
    assert fields.pop("event_id") == call.event_id
    fields.pop("timestamp", None)  # the Call's own (or, with the fast event path, added when the event is built)
    expected, expected_adjusted = reference_fields(call, observation, end)
    assert (fields, adjusted) == (expected, expected_adjusted)
    assert list(fields) == list(expected)  # the same order of keys
    if fields["metadata"]:
        assert list(fields["metadata"]) == list(expected["metadata"])


# -- the proxy's routed names -------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.observed: list[u.Observation] = []

    def start(self, request: Mapping[str, Any]) -> Recorder:
        return self

    def record(self, observation: u.Observation, end: str = COMPLETED) -> None:
        self.observed.append(observation)

    def record_counts(self, counts: u.PlainCounts) -> None:
        model, response_id, input_tokens, output_tokens, cached, reasoning = counts
        self.observed.append(u.Observation(u.Usage(input_tokens, output_tokens, cached, reasoning), model, response_id))


def read(response: Any, request: Mapping[str, Any]) -> u.Observation:
    return u.Observation(u.Usage(response, 1), "m")


def inputs(observation: u.Observation) -> int:
    assert observation.usage is not None
    return observation.usage.input_tokens


def test_a_routed_name_is_read_through_the_child_its_first_access_made():
    recorder = Recorder()
    client = SimpleNamespace(resource=SimpleNamespace(create=lambda n: n), plain=1)
    table: Any = {"resource": {"create": Method("never", read), "later": Method("never", read)}}
    tracked = tracked_client(client, table, recorder, table)
    assert isinstance(tracked, TrackedClient) and tracked.plain == 1
    resource = tracked.resource
    assert tracked.resource is resource and resource.create is resource.create  # made once, then kept
    assert resource.create(5) == 5 and [inputs(o) for o in recorder.observed] == [5]
    for _ in range(2):  # a routed name the client lacks: the client's own AttributeError, every time
        with pytest.raises(AttributeError, match="later"):
            resource.later  # noqa: B018
    client.resource.later = lambda n: n * 2  # the client gains it (a newer SDK): tracked from then on
    assert resource.later(3) == 6 and inputs(recorder.observed[-1]) == 6
    # another wrap of the same client makes its own children (its own recorder)
    other = tracked_client(client, table, Recorder(), table)
    assert type(other) is type(tracked) and other.resource is not resource
    other.resource.create(1)
    assert len(recorder.observed) == 2


def outcome(obj: Any, name: str) -> tuple[str, Any]:
    """What looking `name` up on `obj` gives: the value, or the error's type and message."""
    try:
        return "value", getattr(obj, name)
    except AttributeError as exc:
        return "error", (type(exc), str(exc))


def test_the_generic_lookup_finds_what_wrapts_own_lookup_finds_at_every_level():
    """The proxies read attributes with `object.__getattribute__`, not wrapt's: the same answers, names
    routed or not, dunders included (wrapt's `__doc__` special case too)."""
    raw = openai.OpenAI(api_key="sk-fake", base_url="http://127.0.0.1:9/v1", max_retries=0)
    tracked = tracked_client(raw, routes.OPENAI, Recorder(), routes.OPENAI)
    levels = [(tracked, raw), (tracked.chat, raw.chat), (tracked.chat.completions, raw.chat.completions),
              (tracked.chat.completions.with_raw_response, raw.chat.completions.with_raw_response)]
    for ours, underneath in levels:
        assert vars(TrackedClient)["__getattribute__"] is object.__getattribute__
        # the same proxy class with wrapt's own lookup, as before issue 14
        wrapts = type("Reference", (type(ours),),
                      {"__slots__": (), "__getattribute__": wrapt.ObjectProxy.__getattribute__})
        reference = wrapts(underneath, ours._self_routes, ours._self_recorder, ours._self_root)
        # every name of the object underneath, except the proxy class's own (both lookups find those first)
        names = (set(dir(underneath)) - set(dir(type(ours))) - set(ours._self_routes) - CLIENT_COPIES) | {
            "__module__", "__doc__", "__class__", "__wrapped__", "__dict__", "__name__", "__qualname__",
            "__annotations__", "absent", "_self_absent"}
        for name in sorted(names):
            if outcome(underneath, name) == outcome(underneath, name):
                assert outcome(ours, name) == outcome(reference, name), name
            else:  # a property making a new object per access (`default_headers`): the same kind of answer
                assert type(outcome(ours, name)[1]) is type(outcome(reference, name)[1]), name
        assert isinstance(ours, type(underneath)) and repr(ours) == repr(underneath) and dir(ours) == dir(underneath)
    # the routed names: tracked children, made once, kept on the proxy and never on the client
    assert tracked.chat is tracked.chat and tracked.chat.__wrapped__ is raw.chat
    assert tracked.chat.completions.create is not raw.chat.completions.create
    assert "completions" not in vars(raw.chat) or vars(raw.chat)["completions"] is raw.chat.completions
    assert isinstance(tracked.with_options(timeout=3), TrackedClient)


class Queue:
    """The delivery client's two entry points the tracker uses, recording what they get."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, bytes]] = []
        self.reports: list[Any] = []

    def _enqueue_json(self, event_id: str, body: bytes, wait: bool = True) -> str:
        self.queued.append((event_id, body))
        return event_id

    def _report(self, failure: Any) -> None:
        self.reports.append(failure)


START_NS = 1_764_612_000_123_456_789  # 2025-12-01T18:00:00.123456789Z


@pytest.mark.parametrize("attributed", [True, False])
def test_an_events_id_and_timestamp_are_the_calls_start_though_made_when_it_is_recorded(monkeypatch, attributed):
    """The call's instant is read when the call starts; the id is minted from it when the event is written
    (or, for an untracked call, reported), so both name the start, however late the call ends."""
    queue = Queue()
    billing = Billing(queue, ContextVar("scope", default=None), provider="openai",  # type: ignore[arg-type]
                      attribution=Attribution("cust_1") if attributed else None, metadata=None,
                      feature_id="chat", team_id=None)
    monkeypatch.setattr(tracker_module, "time", SimpleNamespace(time_ns=lambda: START_NS))
    call = billing.start({"model": "gpt-4o"})
    monkeypatch.undo()  # the call ends later, in another millisecond
    assert call.event_id is None
    call.record(u.Observation(u.Usage(3, 2), "gpt-4o", "resp_1"))
    if attributed:
        [(event_id, body)] = queue.queued
        event = json.loads(body)
    else:
        [failure] = queue.reports
        [event] = failure.events
        event_id = event["event_id"]
    assert call.event_id == event_id == event["event_id"]
    assert uuid.UUID(event_id).version == 7 and int(event_id.replace("-", "")[:12], 16) == START_NS // 1_000_000
    assert event["timestamp"] in ("2025-12-01T18:00:00.123000Z", "2025-12-01T18:00:00.123000+00:00")


# -- a plain chat call's counts, read without objects ---------------------------------------------------


class Written(Call):
    """A Call that keeps the fields it would write."""

    __slots__ = ("written",)

    def _write(self, fields: dict[str, Any], adjusted: str, model: str | None) -> None:
        self.written = (fields, adjusted)


# mostly what the shortcut answers (about half the examples), with every way out of it mixed in
tokens = st.one_of(st.integers(0, 50), st.integers(0, 50), st.integers(-2, 50), st.sampled_from([None, "7"]))
other_kinds = st.sampled_from([0, 0, 0, None, None, 3, -1, "7"])


def details(parts: str, kinds: list[str]) -> st.SearchStrategy[Any]:
    optional = {parts: tokens, **dict.fromkeys(kinds, other_kinds)}
    return st.one_of(st.none(), st.fixed_dictionaries({}, optional=optional))


chat_usages = st.fixed_dictionaries(
    {"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": st.integers(0, 99)},
    optional={"prompt_tokens_details": details("cached_tokens", ["audio_tokens", "image_tokens", "cache_write_tokens",
                                                                 "text_tokens", "some_new_kind"]),
              "completion_tokens_details": details("reasoning_tokens", ["audio_tokens", "accepted_prediction_tokens",
                                                                        "rejected_prediction_tokens", "text_tokens"]),
              "cost": st.sampled_from([None, None, None, 0.25, 0, True, "0.1"])},
)


def chat_completion(usage: dict[str, Any] | None, model: str, response_id: str) -> Any:
    """As the SDK makes it from an HTTP answer: constructed, not validated (a count may be a string)."""
    from openai._models import construct_type

    return construct_type(type_=openai.types.chat.ChatCompletion, value={
        "id": response_id, "object": "chat.completion", "created": 1, "model": model, "usage": usage,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}]})


@settings(max_examples=400)
@given(usage=st.one_of(st.none(), chat_usages, chat_usages), model=st.sampled_from(["gpt-4o"] * 5 + [""]),
       response_id=st.sampled_from(["chatcmpl-1"] * 4 + ["", "r" * 200, "r" * 201]), scope_metadata=metadata,
       wrap_metadata=metadata, attributed=st.booleans(), dicts=st.sampled_from([False] * 5 + [True]))
def test_a_plain_chat_calls_counts_make_the_event_the_general_reading_makes(usage, model, response_id, scope_metadata,
                                                                          wrap_metadata, attributed, dicts):
    response = chat_completion(usage, model, response_id)
    if dicts and response.usage is not None:  # the usage a dict, as some gateways' SDKs leave it: never the shortcut
        response.usage = usage
    billing = Billing(None, ContextVar("scope", default=None), provider="openai",  # type: ignore[arg-type]
                      attribution=None, metadata=wrap_metadata, feature_id="chat", team_id=None)
    attribution = Attribution("cust_1", "user_1", scope_metadata) if attributed else None
    counts = u.read_openai_chat_counts(response)
    if counts is None:
        return  # `read_openai_chat` reads it, as before
    assert not dicts or response.usage is None or not isinstance(response.usage, dict)
    general = Written(billing, attribution, {"model": "gpt-4o-mini"})
    general.record(u.read_openai_chat(response))
    shortcut = Written(billing, attribution, {"model": "gpt-4o-mini"})
    shortcut.record_counts(counts)
    assert shortcut.written == general.written
    fields, _ = shortcut.written
    assert list(fields) == list(general.written[0]) and list(fields["metadata"]) == list(general.written[0]["metadata"])


def test_a_usual_chat_completion_takes_the_shortcut_and_unusual_ones_do_not():
    usage = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
             "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 5, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                           "rejected_prediction_tokens": 0}}
    assert u.read_openai_chat_counts(chat_completion(usage, "gpt-4o", "chatcmpl-1")) == ("gpt-4o", "chatcmpl-1", 20, 9,
                                                                                          4, 5)
    assert u.read_openai_chat_counts(chat_completion({**usage, "prompt_tokens_details": None,
                                                      "completion_tokens_details": None}, "gpt-4o", "c")) == (
        "gpt-4o", "c", 20, 9, None, None)
    unusual = [
        chat_completion(None, "gpt-4o", "c"), chat_completion(usage, "", "c"), chat_completion(usage, "gpt-4o", ""),
        chat_completion(usage, "gpt-4o", "r" * 201), chat_completion({**usage, "cost": 0.5}, "gpt-4o", "c"),
        chat_completion({**usage, "prompt_tokens_details": {"cached_tokens": 21}}, "gpt-4o", "c"),
        chat_completion({**usage, "completion_tokens_details": {"audio_tokens": 2}}, "gpt-4o", "c"),
        chat_completion({**usage, "prompt_tokens": -1}, "gpt-4o", "c"),
        SimpleNamespace(usage=SimpleNamespace(prompt_tokens=1, completion_tokens=1), model="m", id="c"),
    ]
    assert [u.read_openai_chat_counts(response) for response in unusual] == [None] * len(unusual)


# -- a wrap's plain call, written from the wrap's fixed part (`Billing.plain`) ----------------------------

wrap_metadata = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["a", "é\n", "response_id", "feature"]),
    st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)),
    max_size=3))
plain_counts = st.tuples(
    st.sampled_from(["gpt-4o", "m" * 256, "m" * 257, "é\"\\"]), st.sampled_from(["chatcmpl-1", "r" * 200, "é\n\x00"]),
    st.integers(0, 50), st.integers(0, 50), st.one_of(st.none(), st.integers(0, 60)),
    st.one_of(st.none(), st.integers(0, 60)))


def without_id(body: bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(body)
    del event["event_id"]  # (each event its own id of the same millisecond)
    return event


@settings(max_examples=100)
@given(customer_id=st.sampled_from(["cust_1", "é", "c" * 256]), user_id=st.sampled_from([None, "user_1"]),
       team_id=st.sampled_from([None, "team_1"]), metadata=wrap_metadata, counts=plain_counts)
def test_a_wraps_plain_call_queues_the_event_the_general_write_makes(customer_id, user_id, team_id, metadata, counts):
    """A wrap naming who pays writes a plain call's event from its fixed part, checked and written once per
    wrap: the same event (same fields, same bytes but the id) as the general write the same call's counts take
    when billed to a scope; and the same report when that write refuses the event (every billable call is
    queued or reported, never lost)."""
    fast, general = Queue(), Queue()

    def billing(queue: Queue) -> Billing:
        return Billing(queue, ContextVar("scope", default=None), provider="openai",  # type: ignore[arg-type]
                       attribution=Attribution(customer_id, user_id, metadata), metadata=None, feature_id="chat",
                       team_id=team_id)

    ours, reference = billing(fast), billing(general)
    if metadata and ("response_id" in metadata or any(type(value) is list for value in metadata.values())):
        assert ours.plain is None  # the wrap's metadata is beyond `event_json.bound`: every call the general write's
    call = Call(ours, ours.attribution, {"model": "gpt-4o"})
    call.record_counts(counts)
    # the general write: the same call billed to another attribution object of the same values (a scope's)
    other = Call(reference, Attribution(customer_id, user_id, metadata), {"model": "gpt-4o"})
    other.now_ns = call.now_ns
    other.record_counts(counts)
    assert len(fast.queued) == len(general.queued) and len(fast.reports) == len(general.reports)
    assert len(fast.queued) + len(fast.reports) == 1
    if fast.queued:
        [(event_id, body)] = fast.queued
        assert call.event_id == event_id == json.loads(body)["event_id"]
        assert without_id(body) == without_id(general.queued[0][1])
        assert body.replace(event_id.encode(), b"") == general.queued[0][1].replace(general.queued[0][0].encode(), b"")
    else:
        [report], [expected] = fast.reports, general.reports
        assert (report.kind, report.reason) == (expected.kind, expected.reason)
        assert [{**event, "event_id": "-"} for event in report.events] == \
            [{**event, "event_id": "-"} for event in expected.events]


def test_a_wrap_with_a_customer_writes_its_plain_calls_from_its_fixed_part():
    queue = Queue()
    billing = Billing(queue, ContextVar("scope", default=None), provider="openai",  # type: ignore[arg-type]
                      attribution=Attribution("cust_1", None, {"feature": "chat"}), metadata=None, feature_id="chat",
                      team_id=None)
    assert billing.plain is not None
    scoped = Billing(queue, ContextVar("scope", default=None), provider="openai",  # type: ignore[arg-type]
                     attribution=None, metadata=None, feature_id="chat", team_id=None)
    assert scoped.plain is None  # who pays is the scope's, per call
    written: list[Any] = []
    plain = billing.plain

    def spy(*args: Any) -> Any:
        written.append(plain(*args))
        return written[-1]

    billing.plain = spy
    billing.start({"model": "gpt-4o"}).record_counts(("gpt-4o", "chatcmpl-1", 3, 2, None, None))
    [(event_id, body)] = queue.queued
    assert written == [(event_id, body)]
    assert json.loads(body)["metadata"] == {"feature": "chat", "response_id": "chatcmpl-1"}


class Clock:
    """`time.time_ns` of the tracker and the proxies, a second further at each reading."""

    def __init__(self) -> None:
        self.now = START_NS

    def time_ns(self) -> int:
        self.now += 1_000_000_000
        return self.now - 1_000_000_000


PLAIN_USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@pytest.mark.parametrize("answer", ["counts", "unusual", "coroutine", "raises"])
@pytest.mark.parametrize("attributed", [True, False])
def test_a_plain_call_is_billed_at_its_start_instant_to_whoever_paid_then(monkeypatch, answer, attributed):
    """Through the proxy, a plain call's event has the instant read before the provider was called, whichever
    way it is written (the wrap's fixed part, the general write for an unusual answer or a scope's customer,
    an awaitable answer); a call that raises bills nothing and raises as it did."""
    clock = Clock()
    monkeypatch.setattr(tracker_module, "time", clock)
    from openmonetize.lib.llm import proxies

    monkeypatch.setattr(proxies, "time", clock, raising=False)
    queue = Queue()
    billing = Billing(queue, ContextVar("scope", default=None), provider="openai",  # type: ignore[arg-type]
                      attribution=Attribution("cust_1") if attributed else None, metadata=None,
                      feature_id="chat", team_id=None)
    usage = {**PLAIN_USAGE, "cost": 0.5} if answer == "unusual" else PLAIN_USAGE
    response = chat_completion(usage, "gpt-4o", "chatcmpl-1")

    def create(**kwargs: Any) -> Any:
        clock.time_ns()  # the provider's call takes time
        if answer == "raises":
            raise openai.APIConnectionError(request=None)  # type: ignore[arg-type]
        if answer == "coroutine":
            async def later() -> Any:
                return response
            return later()
        return response

    table: Any = {"chat": {"completions": {"create": routes.CHAT_CREATE}}}
    client = tracked_client(SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create))),
                            table, billing, table)
    scope = billing.scope.set(Attribution("cust_scope")) if not attributed else None
    try:
        if answer == "raises":
            with pytest.raises(openai.APIConnectionError):
                client.chat.completions.create(model="gpt-4o", messages=[])
            assert queue.queued == [] and queue.reports == []
            return
        result = client.chat.completions.create(model="gpt-4o", messages=[])
        if answer == "coroutine":
            import asyncio

            result = asyncio.run(result)
    finally:
        if scope is not None:
            billing.scope.reset(scope)
    assert result is response
    [(event_id, body)] = queue.queued
    event = json.loads(body)
    assert event["customer_id"] == ("cust_1" if attributed else "cust_scope")
    assert event["timestamp"] == "2025-12-01T18:00:00.123000Z"  # START_NS: read before the provider's call
    assert int(event_id.replace("-", "")[:12], 16) == START_NS // 1_000_000
    assert (event["input_tokens"], event["output_tokens"]) == (7, 3)
    assert ("cost" in event["metadata"]) == (answer == "unusual")


# -- a plain call billed to a `tracker.customer(...)` scope, written from the scope's bound writer -------------

scope_metadata = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["a", "é\n", "response_id", "feature", "b"]),
    st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)),
    max_size=3))


def unbound_billing(queue: Queue, metadata: dict[str, Any] | None = None, team_id: str | None = None) -> Billing:
    """A wrap without a customer: who pays is the scope's, per call."""
    return Billing(queue, ContextVar("scope", default=None), provider="openai",  # type: ignore[arg-type]
                   attribution=None, metadata=metadata, feature_id="chat", team_id=team_id)


@settings(max_examples=100)
@given(customer_id=st.sampled_from(["cust_1", "é", "c" * 256]), user_id=st.sampled_from([None, "user_1"]),
       team_id=st.sampled_from([None, "team_1"]), scope=scope_metadata, wrap=scope_metadata, counts=plain_counts,
       calls=st.integers(1, 3))
def test_a_scopes_plain_calls_queue_the_events_the_general_write_makes(customer_id, user_id, team_id, scope, wrap,
                                                                      counts, calls):
    """A wrap without a customer writes a plain call billed to a scope from the scope's bound writer (bound at
    the scope's first call, the scope's metadata then the wrap's, as `Call.record_counts` merges them): the same
    event (same fields, same bytes but the id) as the general write of the same call, or the same report when
    that write refuses it; each call queued or reported once."""
    fast, general = Queue(), Queue()
    ours, reference = unbound_billing(fast, wrap, team_id), unbound_billing(general, wrap, team_id)
    attribution = Attribution(customer_id, user_id, scope)
    token = ours.scope.set(attribution)
    try:
        for i in range(calls):
            ours.record_plain(START_NS + i, {"model": "gpt-4o"}, counts)
            Call(reference, attribution, {"model": "gpt-4o"}, START_NS + i).record_counts(counts)
    finally:
        ours.scope.reset(token)
    assert [entry[0] for entry in ours.scoped.values()] == [attribution]
    assert len(fast.queued) == len(general.queued) and len(fast.reports) == len(general.reports)
    assert len(fast.queued) + len(fast.reports) == calls
    for (event_id, body), (other_id, other) in zip(fast.queued, general.queued, strict=True):
        assert event_id == json.loads(body)["event_id"]
        assert body.replace(event_id.encode(), b"") == other.replace(other_id.encode(), b"")
    for report, expected in zip(fast.reports, general.reports, strict=True):
        assert (report.kind, report.reason) == (expected.kind, expected.reason)
        assert [{**event, "event_id": "-"} for event in report.events] == \
            [{**event, "event_id": "-"} for event in expected.events]


def test_a_scope_is_bound_once_per_wrap_and_each_call_billed_to_its_own_scope(monkeypatch):
    """The scope's writer is bound at its first plain call and reused for its next ones; another scope (or an
    object of the same values) has its own; an entry whose id a new scope object reuses is not taken for it;
    the kept scopes are bounded; a call outside any scope is reported as before, never written."""
    queue = Queue()
    billing = unbound_billing(queue, {"feature": "chat"})
    bound: list[Attribution] = []
    bind = Billing._bind

    def spy(self: Billing, attribution: Attribution) -> Any:
        bound.append(attribution)
        return bind(self, attribution)

    monkeypatch.setattr(Billing, "_bind", spy)
    first, second = Attribution("cust_1", "u", {"req": "1"}), Attribution("cust_2")
    counts = ("gpt-4o", "chatcmpl-1", 3, 2, None, None)
    for attribution in (first, first, second, first, Attribution("cust_2")):
        token = billing.scope.set(attribution)
        try:
            billing.record_plain(START_NS, {"model": "gpt-4o"}, counts)
        finally:
            billing.scope.reset(token)
    assert [a.customer_id for a in bound] == ["cust_1", "cust_2", "cust_2"] and bound[0] is first
    events = [json.loads(body) for _, body in queue.queued]
    assert [(e["customer_id"], e.get("user_id"), e["metadata"]) for e in events] == [
        ("cust_1", "u", {"req": "1", "feature": "chat", "response_id": "chatcmpl-1"})] * 2 + [
        ("cust_2", None, {"feature": "chat", "response_id": "chatcmpl-1"})] + [
        ("cust_1", "u", {"req": "1", "feature": "chat", "response_id": "chatcmpl-1"})] + [
        ("cust_2", None, {"feature": "chat", "response_id": "chatcmpl-1"})]
    # an entry left under the id a new scope object has (its old one is gone) is another scope's writer
    third = Attribution("cust_3")
    billing.scoped[id(third)] = (first, billing.scoped[id(first)][1])
    token = billing.scope.set(third)
    try:
        billing.record_plain(START_NS, {"model": "gpt-4o"}, counts)
    finally:
        billing.scope.reset(token)
    assert json.loads(queue.queued[-1][1])["customer_id"] == "cust_3" and billing.scoped[id(third)][0] is third
    kept = []
    for i in range(tracker_module._MAX_SCOPES + 1):
        kept.append(Attribution(f"c{i}"))
        token = billing.scope.set(kept[-1])
        try:
            billing.record_plain(START_NS, {"model": "gpt-4o"}, counts)
        finally:
            billing.scope.reset(token)
        assert len(billing.scoped) <= tracker_module._MAX_SCOPES
    queued = len(queue.queued)
    billing.record_plain(START_NS, {"model": "gpt-4o"}, counts)  # no scope: no one pays
    assert len(queue.queued) == queued
    [report] = queue.reports
    assert report.kind == "untracked" and "had no customer" in report.reason


def test_a_scopes_values_are_fixed_when_it_begins_for_every_kind_of_call():
    """The block's metadata, checked when it begins, is what all its calls bill, whichever way they are written
    (a plain call from the scope's bound writer, an unusual answer by the general write): the yielded
    `Attribution`'s metadata is read-only, so the two can never disagree (llm5: before, changing it changed
    only the events written after the change)."""
    queue = Queue()
    tracker = tracker_module.LLMTracker(queue, feature_id="chat", owns_client=False)  # type: ignore[arg-type]
    billing = tracker.billing(provider="openai")
    given = {"plan": "pro"}
    with tracker.customer("cust_1", metadata=given) as scope:
        given["plan"] = "free"  # (the caller's dict was copied)
        with pytest.raises(TypeError):
            scope.metadata["plan"] = "enterprise"  # type: ignore[index]
        billing.record_plain(START_NS, {"model": "gpt-4o"}, ("gpt-4o", "chatcmpl-1", 3, 2, None, None))
        billing.start({"model": "gpt-4o"}, START_NS).record(u.Observation(u.Usage(3, 2, extra={"audio_tokens": 1}),
                                                                          "gpt-4o", "chatcmpl-2"))
    events = [json.loads(body) for _, body in queue.queued]
    assert [event["metadata"]["plan"] for event in events] == ["pro", "pro"]
    assert [event["customer_id"] for event in events] == ["cust_1", "cust_1"]
