"""What wrapping a provider client with the LLM tracker adds to each call, side by side in one run.

    .venv/bin/pip install -e '.[dev]'
    .venv/bin/python bench/llm_overhead.py [--calls 100] [--rounds 41]

The real `openai.OpenAI` client calls the fake provider (openmonetize.testing.fake_llm, its own process)
with and without the wrap, alternating rounds; the tracker delivers to bench/sink.py (another process), as
a service would. Two shapes: a plain chat completion, and a streamed one read to the end; and what asking
for stream usage costs the unwrapped client by itself (the tracker asks for it). Overhead per
call is the median over rounds of (wrapped - unwrapped) mean call time, in wall time and in this
process's CPU time (all threads: the tracker's background delivery included); goals: <= 30 us and <= 5%
of the unwrapped call. With three processes on two cores, wall-time rounds are noisy (see the IQR), so
the tracker's own caller-thread work is also timed in isolation, on real responses and chunks from the
fake: the attribute lookups through the proxies, reading usage, building, validating and queueing the
event, and for a stream the proxy around the chunks.

The goal line (issue 14) is the added caller cost per plain chat call in a real call: the calling
thread's CPU time (`time.thread_time`, so neither the tracker's delivery threads nor the fake's process
count), wrapped minus unwrapped, median over rounds in rotating order; beside it, the same wrap with the
event's construction and queueing skipped. Before it, the tracker's own work is timed piece by piece
inside real calls, where it runs with cold caches (two to three times its cost in the isolated loops).
`--goal-only` runs these two alone; `--library CHECKOUT` runs against another checkout (before/after).

Last, every billed path (chat, images, transcription, speech, a LiteLLM completion, a LangChain invoke)
is timed in the calling thread's CPU alone (`time.thread_time`), wrapped against unwrapped, and set
against what the chat path adds; the issue-11 goal is that no path adds more than the chat path.
"""

from __future__ import annotations

import os

# before anything imports litellm: else it downloads its price list at import (there is no network here)
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import inspect
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from track import KEY, sink_events, start_sink

FAKE = (
    "import sys, threading\n"
    "from openmonetize.testing.fake_llm import FakeLLMServer\n"
    "fake = FakeLLMServer().start()\n"
    "print(fake.url, flush=True)\n"
    "sys.stdin.read()\n"
)
MESSAGES = [{"role": "user", "content": "Hello!"}]


def start_fake() -> tuple[subprocess.Popen[str], str]:
    """The fake provider in its own process, and its root URL (`FakeLLMServer.base_url` paths go under it)."""
    fake = subprocess.Popen([sys.executable, "-c", FAKE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    return fake, fake.stdout.readline().strip()


def plain(client: Any) -> None:
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


def streamed(client: Any) -> None:
    for _ in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
        pass


def streamed_with_usage(client: Any) -> None:
    for _ in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True}):
        pass


def compare(name: str, baseline: tuple[Callable[[Any], None], Any], compared: tuple[Callable[[Any], None], Any],
            rounds: int, calls: int) -> None:
    """Median over alternating rounds of (compared - baseline) per-call time, wall and CPU."""
    runs = (baseline, compared)
    for call, client in runs:  # warm up connections, caches and the tracker's threads
        round_time(call, client, calls)
    base_times: dict[str, list[float]] = {"wall": [], "cpu": []}
    differences: dict[str, list[float]] = {"wall": [], "cpu": []}
    for i in range(rounds):
        times = [round_time(call, client, calls) for call, client in (runs if i % 2 == 0 else runs[::-1])]
        base, other = (times[0], times[1]) if i % 2 == 0 else (times[1], times[0])
        for k, clock in enumerate(("wall", "cpu")):
            base_times[clock].append(base[k])
            differences[clock].append(other[k] - base[k])
    for clock in ("wall", "cpu"):
        base_median = statistics.median(base_times[clock])
        overhead = statistics.median(differences[clock])
        q1, _, q3 = statistics.quantiles(differences[clock], n=4)
        print(f"{name:<18} {clock:<5} {base_median:>12.1f} {base_median + overhead:>12.1f} {overhead:>12.1f} "
              f"{overhead / base_median:>10.2%}   {q1:.1f} .. {q3:.1f}", flush=True)


def round_time(call: Callable[[Any], None], client: Any, calls: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per call"""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        call(client)
    return (time.perf_counter() - started) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


AUDIO = ("speech.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav")


def tracked_paths(tracker: Any, raw: Any, wrapped: Any, fake_url: str) -> list[BilledPath]:
    """The billed paths, each as (name, unwrapped call, wrapped call); the first is the reference."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    def image(client: Any) -> None:
        client.images.generate(model="dall-e-3", prompt="a lighthouse", size="1024x1024", quality="hd")

    def transcription(client: Any) -> None:
        client.audio.transcriptions.create(model="whisper-1", file=AUDIO)

    def speech(client: Any) -> None:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there, how are you?")

    import litellm

    wrapped_litellm = tracker.wrap(client=litellm, customer_id="cust_1")
    route = {"model": "openai/gpt-4o", "api_base": fake_url + "/openai/v1", "api_key": "sk-fake", "messages": MESSAGES}

    chat_model = ChatOpenAI(model="gpt-4o", base_url=fake_url + "/openai/v1", api_key=SecretStr("sk-fake"),
                            max_retries=0)
    from langchain_core.callbacks import BaseCallbackHandler

    class NoOp(BaseCallbackHandler):
        run_inline = True  # as the tracker's handler

    handler = tracker.langchain_handler(customer_id="cust_1")
    config: Any = {"callbacks": [handler]}
    no_op: Any = {"callbacks": [NoOp()]}
    return [
        ("chat completion (reference)", lambda: plain(raw), lambda: plain(wrapped)),
        ("images.generate", lambda: image(raw), lambda: image(wrapped)),
        ("audio.transcriptions", lambda: transcription(raw), lambda: transcription(wrapped)),
        ("audio.speech", lambda: speech(raw), lambda: speech(wrapped)),
        ("LiteLLM completion", lambda: litellm.completion(**route), lambda: wrapped_litellm.completion(**route)),
        ("LangChain ChatOpenAI.invoke", lambda: chat_model.invoke("Hello!"),
         lambda: chat_model.invoke("Hello!", config=config)),
        # LangChain's own cost of calling any handler, and the tracker's handler against that
        ("LangChain, a no-op handler", lambda: chat_model.invoke("Hello!"),
         lambda: chat_model.invoke("Hello!", config=no_op)),
        ("LangChain: ours vs no-op", lambda: chat_model.invoke("Hello!", config=no_op),
         lambda: chat_model.invoke("Hello!", config=config)),
    ]


def isolated_paths(tracker: Any, raw: Any, wrapped: Any, fake_url: str, n: int = 10_000) -> None:
    """The tracker's own caller-thread work per billed path, on real answers from the fake, without the HTTP
    round trip: reading the answer, building, validating and queueing the event (LangChain: both callbacks)."""
    import uuid

    import litellm
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from openmonetize.lib.llm import litellm as litellm_routes
    from openmonetize.lib.llm import proxies, routes

    billing = wrapped._self_recorder
    openai_routes: Any = routes.OPENAI
    route = {"model": "openai/gpt-4o", "api_base": fake_url + "/openai/v1", "api_key": "sk-fake", "messages": MESSAGES}
    cases: list[tuple[str, Any, Any, dict[str, Any]]] = [
        ("chat completion (reference)", routes.CHAT_CREATE,
         raw.chat.completions.create(model="gpt-4o", messages=MESSAGES), {"model": "gpt-4o", "messages": MESSAGES}),
        ("images.generate", openai_routes["images"]["generate"],
         raw.images.generate(model="dall-e-3", prompt="a lighthouse", size="1024x1024", quality="hd"),
         {"model": "dall-e-3", "prompt": "a lighthouse", "size": "1024x1024", "quality": "hd"}),
        ("audio.transcriptions", openai_routes["audio"]["transcriptions"]["create"],
         raw.audio.transcriptions.create(model="whisper-1", file=AUDIO), {"model": "whisper-1", "file": AUDIO}),
        ("audio.speech", openai_routes["audio"]["speech"]["create"],
         raw.audio.speech.create(model="tts-1", voice="alloy", input="Hello there"),
         {"model": "tts-1", "voice": "alloy", "input": "Hello there"}),
        ("LiteLLM completion", litellm_routes.ROUTES["completion"], litellm.completion(**route), route),
    ]
    print(f"\ntracker's own caller-thread work per billed path, isolated ({n} calls; thread CPU)")
    chat = None
    for name, method, response, request in cases:
        def work(method: Any = method, response: Any = response, request: dict[str, Any] = request) -> None:
            proxies._observe(response, method, request, False, billing.start(request))

        cost = _thread_cpu(work, n)
        chat = cost if chat is None else chat
        print(f"{name:<28} {cost:>7.1f} us  ({cost / chat:.2f} x chat)", flush=True)

    class Capture(BaseCallbackHandler):
        """LangChain's real callback arguments, to replay into the tracker's handler."""

        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            self.start = (serialized, messages, kwargs)

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            self.end = (response, kwargs)

    capture = Capture()
    chat_model = ChatOpenAI(model="gpt-4o", base_url=fake_url + "/openai/v1", api_key=SecretStr("sk-fake"),
                            max_retries=0)
    chat_model.invoke("Hello!", config={"callbacks": [capture]})
    handler = tracker.langchain_handler(customer_id="cust_1")
    serialized, messages, start_kwargs = capture.start
    result, end_kwargs = capture.end
    start_kwargs = {k: v for k, v in start_kwargs.items() if k != "run_id"}
    end_kwargs = {k: v for k, v in end_kwargs.items() if k != "run_id"}

    run_id = uuid.uuid4()  # LangChain makes a run id per call; that is LangChain's cost, not the handler's

    def callbacks() -> None:
        handler.on_chat_model_start(serialized, messages, run_id=run_id, **start_kwargs)
        handler.on_llm_end(result, run_id=run_id, **end_kwargs)

    cost = _thread_cpu(callbacks, n)
    assert chat is not None
    print(f"{'LangChain handler callbacks':<28} {cost:>7.1f} us  ({cost / chat:.2f} x chat)", flush=True)


def _thread_cpu(work: Callable[[], object], n: int) -> float:
    for _ in range(n // 10):
        work()
    started = time.thread_time()
    for _ in range(n):
        work()
    return (time.thread_time() - started) / n * 1e6


def isolated(raw: Any, wrapped: Any, n: int = 20_000) -> None:
    """The tracker's caller-thread work per call, without the HTTP round trip around it."""
    from openmonetize.lib.llm import LLMTracker, proxies, routes

    recorder = wrapped._self_recorder
    method = routes.CHAT_CREATE
    response = raw.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    chunks = list(raw.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                              stream_options={"include_usage": True}))

    def per_call(work: Callable[[], object]) -> float:
        started = time.perf_counter()
        for _ in range(n):
            work()
        return (time.perf_counter() - started) / n * 1e6

    lookup = per_call(lambda: wrapped.chat.completions.create) - per_call(lambda: raw.chat.completions.create)
    request = {"model": "gpt-4o", "messages": MESSAGES}
    plain_work = per_call(lambda: proxies._observe(response, method, request, False, recorder.start(request)))

    def tracked_stream() -> None:
        assert method.tally is not None
        for _ in proxies.TrackedStream(iter(chunks), method.tally(True), recorder.start(request).record):
            pass

    def bare_stream() -> None:
        for _ in iter(chunks):
            pass

    stream_work = per_call(tracked_stream) - per_call(bare_stream)
    tracker = LLMTracker(recorder.client, feature_id="chat", owns_client=False)
    wrap_cost = per_call(lambda: tracker.wrap(client=raw, customer_id="cust_1", metadata={"feature": "chat"}))
    print(f"\ntracker's caller-thread work, isolated ({n} calls): attribute lookups {lookup:.1f} us; plain call "
          f"{lookup + plain_work:.1f} us; streamed call ({len(chunks)} chunks) {lookup + stream_work:.1f} us; "
          f"one wrap (per customer or request) {wrap_cost:.1f} us")


BilledPath = tuple[str, Callable[[], object], Callable[[], object]]  # name, unwrapped call, wrapped call


def caller_thread_cpu(paths: list[BilledPath], rounds: int, calls: int) -> None:
    """What each tracked path adds to the calling thread's CPU time in a real call (time.thread_time: the
    delivery threads and the fake's process are not counted), against the chat path's added cost."""
    print(f"\ncaller-thread CPU per call ({rounds} alternating rounds x {calls} calls; median over rounds)")
    print(f"{'path':<28} {'unwrapped us':>13} {'wrapped us':>11} {'added us':>9} {'added / chat':>13}")
    chat_added = None
    for name, unwrapped, wrapped in paths:
        for call in (unwrapped, wrapped):  # warm up
            for _ in range(calls // 4 or 1):
                call()
        base: list[float] = []
        added: list[float] = []
        for i in range(rounds):
            order = (unwrapped, wrapped) if i % 2 == 0 else (wrapped, unwrapped)
            times = {}
            for call in order:
                started = time.thread_time()
                for _ in range(calls):
                    call()
                times[call] = (time.thread_time() - started) / calls * 1e6
            base.append(times[unwrapped])
            added.append(times[wrapped] - times[unwrapped])
        base_median, added_median = statistics.median(base), statistics.median(added)
        chat_added = added_median if chat_added is None else chat_added
        print(f"{name:<28} {base_median:>13.1f} {base_median + added_median:>11.1f} {added_median:>9.1f} "
              f"{added_median / chat_added:>13.2f}", flush=True)


def in_situ(raw: Any, wrapped: Any, rounds: int, calls: int) -> None:
    """The tracker's own work timed inside real plain calls, piece by piece: where it really runs, cold
    (between two calls the HTTP client's and the SDK's code have the caches), unlike `isolated`'s loops.

    A copy of the wrap with timers at its seams: the attribute lookups, `start` (who pays, event id and
    timestamp), reading the response, `record` (building, validating and queueing the event), and the
    provider call itself; wall clock of the calling thread (perf_counter: a cheap clock, and a preemption
    inside a window of microseconds is rare), per call, median over rounds of `calls` calls."""
    import dataclasses

    from openmonetize.lib.llm import proxies, routes

    billing = wrapped._self_recorder
    clock = time.perf_counter
    pieces = ("lookups", "start", "read", "record", "provider call", "wrapped call")
    spent = dict.fromkeys(pieces, 0.0)

    class TimedCall:
        __slots__ = ("call",)

        def __init__(self, call: Any) -> None:
            self.call = call

        def record(self, observation: Any, end: str = proxies.COMPLETED) -> None:
            started = clock()
            self.call.record(observation, end)
            spent["record"] += clock() - started

        def record_counts(self, counts: Any) -> None:  # (a plain call's counts, read without objects: llm2)
            started = clock()
            self.call.record_counts(counts)
            spent["record"] += clock() - started

    class TimedBilling:
        def start(self, request: Any, *now_ns: int) -> TimedCall:
            started = clock()
            call = billing.start(request, *now_ns)
            spent["start"] += clock() - started
            return TimedCall(call)

    if hasattr(billing, "record_plain"):  # (llm4's: a plain call billed without a Call, its instant read before)
        def record_plain(self: Any, now_ns: int, request: Any, counts: Any) -> None:
            started = clock()
            billing.record_plain(now_ns, request, counts)
            spent["record"] += clock() - started

        TimedBilling.record_plain = record_plain  # type: ignore[attr-defined]

    def read(response: Any, request: Any) -> Any:
        started = clock()
        observation = routes.CHAT_CREATE.read(response, request)  # type: ignore[misc]
        spent["read"] += clock() - started
        return observation

    counts_of = getattr(routes.CHAT_CREATE, "counts", None)

    def counts(response: Any) -> Any:
        started = clock()
        counted = counts_of(response) if counts_of is not None else None
        spent["read"] += clock() - started
        return counted

    def provider_call(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        response = raw.chat.completions.create(*args, **kwargs)
        spent["provider call"] += clock() - started
        return response

    # the same client tree and routes as the wrap, with the timed seams
    namespace = types.SimpleNamespace
    provider = namespace(chat=namespace(completions=namespace(create=provider_call)))
    seams: dict[str, Any] = {"read": read, **({"counts": counts} if counts_of else {})}
    timed_method = dataclasses.replace(routes.CHAT_CREATE, **seams)
    table: Any = {"chat": {"completions": {"create": timed_method}}}
    make = getattr(proxies, "tracked_client", None) or proxies.TrackedClient  # (before issue 14: the class)
    timed = make(provider, table, TimedBilling(), table)

    def one(client: Any) -> None:
        started = clock()
        create = client.chat.completions.create
        looked_up = clock()
        create(model="gpt-4o", messages=MESSAGES)
        spent["lookups"] += looked_up - started
        spent["wrapped call"] += clock() - looked_up

    medians: dict[str, list[float]] = {piece: [] for piece in pieces}
    for _ in range(calls):
        one(timed)
    for _ in range(rounds):
        for piece in pieces:
            spent[piece] = 0.0
        for _ in range(calls):
            one(timed)
        for piece in pieces:
            medians[piece].append(spent[piece] / calls * 1e6)
    m = {piece: statistics.median(values) for piece, values in medians.items()}
    own = m["wrapped call"] - m["provider call"] + m["lookups"]
    print(f"\ntracker's own work inside real plain calls ({rounds} rounds x {calls} calls; wall clock of the calling "
          f"thread, median per call): {own:.1f} us = lookups {m['lookups']:.1f} + start {m['start']:.1f} (who "
          f"pays, id, timestamp) + read {m['read']:.1f} + record {m['record']:.1f} (build, validate, queue) + "
          f"the wrapper's own frames and timers {own - m['lookups'] - m['start'] - m['read'] - m['record']:.1f}",
          flush=True)


def cold_parts(raw: Any, wrapped: Any, n: int) -> None:
    """The parts of a wrapped plain call, each timed alone right after a real unwrapped call (so as cold as
    in a real call, where the HTTP client's and the SDK's code had the caches): the tracker's own, and
    those of the event's writing (`event_json`, `event_ids`) it calls. perf_counter_ns, median over `n`
    calls less an empty timing's; the parts are timed in turn, one per real call."""
    import dataclasses

    from openmonetize.lib import event_ids, event_json
    from openmonetize.lib.event_types import MODELS_BY_TYPE
    from openmonetize.lib.llm import routes, usage
    from openmonetize.lib.llm import tracker as tracker_module
    from openmonetize.lib.llm.tracker import Billing, Call

    billing = wrapped._self_recorder
    request = {"model": "gpt-4o", "messages": MESSAGES}
    response = raw.chat.completions.create(**request)
    counts_of = getattr(usage, "read_openai_chat_counts", None)  # (llm2's shortcut; absent before)
    counts = counts_of(response) if counts_of is not None else None
    captured: dict[str, Any] = {}

    class Fields(Call):
        __slots__ = ()

        def _write(self, fields: Any, adjusted: str, model: Any) -> None:
            captured.update(fields)

    # (since llm4 a wrap's plain call writes its event from the wrap's fixed part, `Billing.plain`, and makes
    # no fields; they are still the path of a call billed to a `tracker.customer(...)` scope, which this
    # other attribution object takes)
    general_attribution = dataclasses.replace(billing.attribution)

    def fields() -> None:
        call = Fields(billing, general_attribution, request)
        if counts is not None:
            call.record_counts(counts)
        else:
            captured.update(call._fields(routes.CHAT_CREATE.read(response, request), "completed")[0])  # type: ignore

    fields()
    values = {key: value for key, value in captured.items() if key != "event_type"}
    plan = event_json.PLANS[MODELS_BY_TYPE["TOKEN_USAGE"]]
    assert plan is not None
    no_metadata = {**values, "metadata": None}
    client = billing.client
    body = plan.write(dict(values), time.time_ns())
    assert body is not None, "the tracker's fields fall back to the model: event_json's written path declines them"
    print("\nthe tracker's event takes event_json's written path (the plan answers its fields, no model built)")
    now = [0]

    def general() -> None:  # the Observation, then `Call._fields` (the only way before llm2's shortcut)
        Call(billing, billing.attribution, request)._fields(routes.CHAT_CREATE.read(response, request), "completed")  # type: ignore[misc]

    def read() -> object:
        if counts_of is not None and counts is not None:
            return counts_of(response)
        return routes.CHAT_CREATE.read(response, request)  # type: ignore[misc]

    def cached_id() -> None:  # before the real call: the write then finds its millisecond's id prefix made
        now[0] = time.time_ns()
        event_ids.id_and_timestamp(now[0])
        event_ids.id_and_timestamp(now[0])  # (since llm3 a millisecond's second id makes its iterator)

    plain_writer = getattr(billing, "plain", None)  # (llm4's: a plain call's event from the wrap's fixed part)
    if plain_writer is not None:
        assert counts is not None and plain_writer(time.time_ns(), *counts) is not None, "the bound writer declines"
    scoped = Billing(billing.client, billing.scope, provider=billing.provider, attribution=None, metadata=None,
                     feature_id=billing.feature_id, team_id=billing.team_id)
    # llm5's cut undone, in the same run (paired): `wait` passed by keyword (since llm5 the tracker passes it by
    # position)
    wait_by_position = inspect.signature(billing.client._enqueue_json).parameters["wait"].kind \
        is inspect.Parameter.POSITIONAL_OR_KEYWORD
    keyword_writer = getattr(event_json, "writer", None)  # (llm3's; the tracker's way to write since)
    writer = keyword_writer(MODELS_BY_TYPE["TOKEN_USAGE"]) if keyword_writer is not None else None

    parts: list[tuple[str, Callable[[], object], Callable[[], object] | None]] = [
        ("(empty)", lambda: None, None),
        ("lookups: client.chat.completions.create", lambda: wrapped.chat.completions.create, None),
        ("  the same on the unwrapped client", lambda: raw.chat.completions.create, None),
        ("start (Billing.start)", lambda: billing.start(request), None),
        ("reading the response" + (" (the counts shortcut)" if counts is not None else ""), read, None),
        ("the event's fields", fields, None),
        ("  reading and fields, the general way", general, None),
        ("event_ids: id + timestamp, a new millisecond", lambda: event_ids.id_and_timestamp(time.time_ns()), None),
        ("event_json write, its millisecond's id made", lambda: plan.write(dict(values), now[0]), cached_id),
        ("  the same without metadata", lambda: plan.write(dict(no_metadata), now[0]), cached_id),
        ("event_json.dump (a new millisecond)",
         lambda: event_json.dump(MODELS_BY_TYPE["TOKEN_USAGE"], dict(values), time.time_ns()), None),
        *([("event_json.writer (a new millisecond: the tracker's call)",
            lambda: writer(time.time_ns(), **values), None)] if writer is not None else []),
        *([("the wrap's bound writer (Billing.plain, a new millisecond)",
            lambda: plain_writer(time.time_ns(), *counts), None)] if plain_writer is not None and counts else []),
        ("queueing (_enqueue_json)", lambda: client._enqueue_json(*body, wait=False), None),
        *([("  the same, wait by position (the tracker's since llm5)",
            lambda: client._enqueue_json(body[0], body[1], False), None)] if wait_by_position else []),
        *([("queueing as the tracker queues (tracker._queue)",
            lambda: tracker_module._queue(billing, billing.attribution, *body, "gpt-4o"), None)]
          if hasattr(tracker_module, "_queue") else []),
        *([("the whole record_plain (Billing.record_plain: llm4's plain path)",
            lambda: billing.record_plain(time.time_ns(), request, counts), None)]
          if hasattr(billing, "record_plain") and counts is not None else []),
        # a wrap without a customer, its call billed to the `tracker.customer(...)` scope around it (set below):
        # the general write before llm5, the scope's bound writer since
        *([("  the same, billed to a tracker.customer(...) scope",
            lambda: scoped.record_plain(time.time_ns(), request, counts), None)]
          if hasattr(billing, "record_plain") and counts is not None else []),
        ("the whole record", lambda: (Call(billing, billing.attribution, request).record_counts(counts)
                                      if counts is not None else
                                      Call(billing, billing.attribution, request).record(
                                          routes.CHAT_CREATE.read(response, request))), None),  # type: ignore
    ]
    times: dict[str, list[int]] = {name: [] for name, _, _ in parts}
    clock = time.perf_counter_ns
    scope = billing.scope.set(dataclasses.replace(billing.attribution))  # (the wrap names its own: scoped only)
    try:
        for _ in range(n):
            for name, part, before in parts:
                if before is not None:
                    before()
                plain(raw)
                started = clock()
                part()
                times[name].append(clock() - started)
    finally:
        billing.scope.reset(scope)
    empty = statistics.median(times["(empty)"])
    print(f"\nthe wrapped plain call's parts, each timed alone right after a real unwrapped call ({n} calls; "
          f"median us, less an empty timing's {empty / 1000:.2f})")
    for name, _, _ in parts[1:]:
        print(f"  {name:<50} {(statistics.median(times[name]) - empty) / 1000:6.2f}", flush=True)


def cuts(raw: Any, wrapped: Any, rounds: int, calls: int) -> None:
    """What each of the wrapper's cuts of issue 14's second attempt (branch llm2) saves in a real call,
    measured as the goal line is (caller-thread CPU, wrapped minus unwrapped, rotating order) with the
    cut undone in one more wrap of the same client, in the same rounds, so that the difference is paired
    round by round (a before/after pair of runs on this shared machine differs by more than the cuts).

    - wrapt's lookup: the proxies read attributes through wrapt's `__getattribute__` again;
    - the general reading: no `Method.counts`, the `Observation`, `Usage` and `Call._fields`;
    - the id at start: each call mints its event id when it starts, as before (then its event is written
      with that id, and the write formats one more, unused, as before)."""
    import dataclasses

    import wrapt

    from openmonetize.lib.event_ids import new_event_id
    from openmonetize.lib.llm import proxies, routes
    from openmonetize.lib.llm.tracker import Call

    if not hasattr(routes.CHAT_CREATE, "counts"):
        print("\n(--cuts: this library has none of llm2's cuts)")
        return
    billing = wrapped._self_recorder

    class IdAtStart(Call):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.event_id = new_event_id(self.now_ns)

    class StartsWithId:
        def start(self, request: Any) -> Call:
            return IdAtStart(billing, billing.attribution, request)

    def wrap(recorder: Any, general: bool = False, wrapt_lookup: bool = False) -> Any:
        table: Any = routes.OPENAI
        if general:
            table = {"chat": {"completions": {"create": dataclasses.replace(routes.CHAT_CREATE, counts=None)}}}
        if not wrapt_lookup:
            return proxies.tracked_client(raw, table, recorder, table)
        base, classes = proxies.TrackedClient, proxies._CLASSES
        proxies.TrackedClient = type("TrackedClient", (base,), {  # type: ignore[misc,assignment]
            "__slots__": (), "__getattribute__": wrapt.ObjectProxy.__getattribute__})
        proxies._CLASSES = {}
        try:  # the children are made now, of classes with wrapt's lookup, and kept
            client = proxies.tracked_client(raw, table, recorder, table)
            client.chat.completions.create  # noqa: B018
            return client
        finally:
            proxies.TrackedClient, proxies._CLASSES = base, classes  # type: ignore[misc]

    clients = {
        "unwrapped": raw, "wrapped": wrapped,
        "wrapt's lookup": wrap(billing, wrapt_lookup=True),
        "the general reading": wrap(billing, general=True),
        "the id at start": wrap(StartsWithId()),
        "all three undone": wrap(StartsWithId(), general=True, wrapt_lookup=True),
    }
    names = list(clients)
    for client in clients.values():
        for _ in range(calls):
            plain(client)
    thread: dict[str, list[float]] = {name: [] for name in clients}
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            started = time.thread_time()
            for _ in range(calls):
                plain(clients[name])
            thread[name].append((time.thread_time() - started) / calls * 1e6)
    added = {name: [t - r for t, r in zip(thread[name], thread["unwrapped"], strict=True)] for name in names[1:]}
    print(f"\neach cut undone, in the same rounds ({rounds} rounds x {calls} calls; caller-thread CPU, median per "
          f"call): added by the wrap as it is {statistics.median(added['wrapped']):.1f} us")
    for name in names[2:]:
        saved = [u - w for u, w in zip(added[name], added["wrapped"], strict=True)]
        q1, _, q3 = statistics.quantiles(saved, n=4)
        print(f"  {name:<22} added {statistics.median(added[name]):6.1f} us: the cut saves "
              f"{statistics.median(saved):5.1f} us (paired per round; IQR {q1:.1f} .. {q3:.1f})", flush=True)


GOAL_US = 35.0  # issue 14: added caller cost per plain chat call in a real call


def goal(raw: Any, wrapped: Any, rounds: int, calls: int) -> float:
    """Issue 14's measure: what the wrap adds to the calling thread's CPU per plain chat call in a real call
    (the delivery threads and the fake's process not counted), median over rounds in rotating order.

    Measured beside it in the same rounds: the same wrap with the event's construction and queueing
    skipped (each call's fields are still made: `Call._fields`), which splits the added cost in two; and
    the CPU the process's other threads (the tracker's delivery) spend per wrapped call."""
    from openmonetize.lib.llm import proxies, routes
    from openmonetize.lib.llm.tracker import Call

    billing = wrapped._self_recorder

    class FieldsOnly(Call):
        __slots__ = ()

        def record(self, observation: Any, end: str = proxies.COMPLETED) -> None:
            if not self.recorded:
                self.recorded = True
                self._fields(observation, end)

        def record_counts(self, counts: Any) -> None:
            if getattr(self.billing, "plain", None) is not None:  # (llm4's plain path makes no fields: none to make)
                self.recorded = True
                return
            super().record_counts(counts)

        def _write(self, fields: Any, adjusted: str, model: Any) -> None:
            """(`record_counts`, a plain call's counts read without objects: its fields made, then this)"""

    class FieldsOnlyBilling:
        def start(self, request: Any, *now_ns: int) -> Call:
            return FieldsOnly(billing, billing.attribution or billing.scope.get(), request, *now_ns)

    if hasattr(billing, "record_plain"):  # (llm4's plain path: no fields made, nothing written or queued)
        FieldsOnlyBilling.record_plain = lambda self, now_ns, request, counts: None  # type: ignore[attr-defined]

    make = getattr(proxies, "tracked_client", None) or proxies.TrackedClient  # (before issue 14: the class)
    fields_only = make(raw, routes.OPENAI, FieldsOnlyBilling(), routes.OPENAI)
    clients = {"unwrapped": raw, "wrapped": wrapped, "fields only": fields_only}
    for client in clients.values():  # warm up
        for _ in range(calls):
            plain(client)
    thread: dict[str, list[float]] = {name: [] for name in clients}
    others: dict[str, list[float]] = {name: [] for name in clients}
    names = list(clients)
    for i in range(rounds):
        for name in names[i % 3:] + names[:i % 3]:
            client = clients[name]
            started, process = time.thread_time(), time.process_time()
            for _ in range(calls):
                plain(client)
            own = time.thread_time() - started
            thread[name].append(own / calls * 1e6)
            others[name].append((time.process_time() - process - own) / calls * 1e6)
    added = [w - r for w, r in zip(thread["wrapped"], thread["unwrapped"], strict=True)]
    fields = [f - r for f, r in zip(thread["fields only"], thread["unwrapped"], strict=True)]
    # the delivery thread runs every flush_interval (0.5 s), so most rounds have none of it: a mean, not a median
    delivery = statistics.mean(others["wrapped"]) - statistics.mean(others["unwrapped"])
    q1, _, q3 = statistics.quantiles(added, n=4)
    median = statistics.median(added)
    print(f"\nthe same wrap with the event's construction and queueing skipped: {statistics.median(fields):.1f} us "
          f"added; the delivery threads' CPU per wrapped call (mean): {delivery:.1f} us (not the caller's)")
    print(f"goal (issue 14): added caller cost per plain chat call, caller-thread CPU in a real call "
          f"({rounds} rounds x {calls} calls): {median:.1f} us (IQR {q1:.1f} .. {q3:.1f}; unwrapped "
          f"{statistics.median(thread['unwrapped']):.1f} us) -> {'met' if median <= GOAL_US else 'NOT met'} "
          f"(<= {GOAL_US:.0f} us)", flush=True)
    return median


def use_library(checkout: str) -> None:
    """Import openmonetize from `checkout`: ahead of the editable install's import hook."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder)]
    sys.path.insert(0, os.path.abspath(checkout))
    import openmonetize

    print(f"openmonetize from {os.path.dirname(openmonetize.__file__)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="calls per round and client")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--paths-only", action="store_true", help="only the caller-thread CPU table of every path")
    parser.add_argument("--goal-only", action="store_true", help="only the issue-14 goal line (plain chat call)")
    parser.add_argument("--isolated-only", action="store_true",
                        help="only the tracker's work in isolated loops (lookups, plain and streamed call, one wrap)")
    parser.add_argument("--parts", type=int, metavar="N", default=0,
                        help="with --goal-only: first the wrapped call's parts, each timed alone after N real calls")
    parser.add_argument("--cuts", action="store_true",
                        help="only what each of llm2's cuts saves, undone in turn in the same rounds (paired)")
    parser.add_argument("--library", metavar="CHECKOUT",
                        help="import openmonetize from this checkout instead of the installed one (a before/after "
                             "comparison: `git worktree add --detach /tmp/before main`)")
    args = parser.parse_args()
    if args.library:
        use_library(args.library)

    import openai

    from openmonetize import create_llm_tracker

    sink, sink_url = start_sink()
    fake, fake_url = start_fake()
    base_url = fake_url + "/openai/v1"
    try:
        tracker = create_llm_tracker(api_key=KEY, base_url=sink_url)
        raw = openai.OpenAI(api_key="sk-fake", base_url=base_url, max_retries=0)
        wrapped = tracker.wrap(client=raw, customer_id="cust_1", metadata={"feature": "chat"})
        if args.cuts:
            cuts(raw, wrapped, args.rounds, args.calls)
            tracker.shutdown(30)
            return
        if args.isolated_only:
            isolated(raw, wrapped)
            tracker.shutdown(30)
            return
        if args.goal_only:
            if args.parts:
                cold_parts(raw, wrapped, args.parts)
            in_situ(raw, wrapped, args.rounds, args.calls)
            goal(raw, wrapped, args.rounds, args.calls)
            tracker.shutdown(30)
            return
        if args.paths_only:
            isolated_paths(tracker, raw, wrapped, fake_url)
            caller_thread_cpu(tracked_paths(tracker, raw, wrapped, fake_url), args.rounds, args.calls)
            tracker.shutdown(30)
            return
        print(f"openai {openai.__version__}, {args.rounds} rounds x {args.calls} calls, alternating\n")
        print(f"{'call':<18} {'clock':<5} {'baseline us':>12} {'compared us':>12} {'overhead us':>12} "
              f"{'overhead %':>11}   overhead IQR us")
        comparisons = (
            ("plain", plain, plain, wrapped),
            ("streamed", streamed, streamed, wrapped),
            # what billing a stream costs by itself: the unwrapped client asking for usage, as the tracker does
            ("streamed+usage", streamed, streamed_with_usage, raw),
        )
        for name, base_call, call, client in comparisons:
            compare(name, (base_call, raw), (call, client), args.rounds, args.calls)
        tracker.flush(30)
        print(f"\nevents the sink received: {sink_events(sink_url)} "
              f"(wrapped calls: {2 * (args.rounds + 1) * args.calls}); dropped: {tracker.client.stats()['dropped']}")
        print("(baseline: the unwrapped client; compared: the wrapped one, or for streamed+usage the unwrapped one"
              " with stream_options.include_usage)")
        isolated(raw, wrapped)
        isolated_paths(tracker, raw, wrapped, fake_url)
        caller_thread_cpu(tracked_paths(tracker, raw, wrapped, fake_url), args.rounds, args.calls)
        in_situ(raw, wrapped, args.rounds, args.calls)
        goal(raw, wrapped, args.rounds, args.calls)
        tracker.shutdown(30)
    finally:
        fake.terminate()
        sink.terminate()


if __name__ == "__main__":
    main()
