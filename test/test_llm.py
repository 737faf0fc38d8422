"""The LLM tracker, driving the real provider SDKs against the fake provider server over loopback, with
events delivered by the real OpenMonetize client to a real LocalIngestServer."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import anthropic
import groq
import openai
import pytest
from conftest import API_KEY, ROOT
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from pydantic import BaseModel, ValidationError

from openmonetize import DeliveryFailure, OpenMonetize, create_llm_tracker
from openmonetize.lib.llm.tracker import LLMTracker
from openmonetize.testing import LocalIngestServer
from openmonetize.testing.fake_llm import REPLY_CHUNKS, USAGE, FakeLLMServer, reported_model

CHAT = USAGE["openai.chat"]
RESPONSES = USAGE["openai.responses"]
OPENROUTER = USAGE["openrouter.chat"]
GROQ = USAGE["groq.chat"]
CLAUDE = USAGE["anthropic.messages"]
GEMINI = USAGE["gemini.generateContent"]
MESSAGES: Any = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture(scope="module")
def ingest() -> Iterator[LocalIngestServer]:
    with LocalIngestServer(api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def tracker(ingest: LocalIngestServer) -> Iterator[LLMTracker]:
    tracker = create_llm_tracker(api_key=API_KEY, base_url=ingest.url, flush_interval=0.02)
    yield tracker
    tracker.shutdown(5)


@pytest.fixture
def customer(request: pytest.FixtureRequest) -> str:
    """One customer per test, so each test reads only its own events from the shared server."""
    name: str = request.node.name
    return "cust_" + name.replace("[", "_").replace("]", "").replace("-", "_")[:200]


def recorded(tracker: LLMTracker, ingest: LocalIngestServer, customer: str) -> list[dict[str, Any]]:
    """The customer's events in the order of their calls: an event's timestamp is its call's start (the
    service accepts two batches in flight at once in either order, so acceptance order is not call order)."""
    assert tracker.flush(10)
    events = [event for event in ingest.events if event["customer_id"] == customer]
    return sorted(events, key=lambda event: datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")))


def only(tracker: LLMTracker, ingest: LocalIngestServer, customer: str) -> dict[str, Any]:
    [event] = recorded(tracker, ingest, customer)
    return event


def tokens(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["input_tokens"], event["output_tokens"], event.get("cached_input_tokens"),
            event.get("reasoning_tokens"))


def assert_ids(event: dict[str, Any], response_id: str) -> bool:
    """Each call gets its own UUIDv7; the provider's response id is kept beside it, in metadata."""
    assert uuid.UUID(event["event_id"]).version == 7
    assert event["metadata"]["response_id"] == response_id
    return True


def run(value: Any) -> Any:
    """Await `value` on a fresh event loop when it is a coroutine (the async half of a sync/async pair)."""
    return asyncio.run(value) if inspect.iscoroutine(value) else value


CHAT_TOKENS = (CHAT["prompt_tokens"], CHAT["completion_tokens"], CHAT["cached_tokens"], CHAT["reasoning_tokens"])
RESPONSES_TOKENS = (RESPONSES["input_tokens"], RESPONSES["output_tokens"], RESPONSES["cached_tokens"],
                    RESPONSES["reasoning_tokens"])
CLAUDE_INPUT = CLAUDE["input_tokens"] + CLAUDE["cache_creation_input_tokens"] + CLAUDE["cache_read_input_tokens"]
CLAUDE_TOKENS = (CLAUDE_INPUT, CLAUDE["output_tokens"], CLAUDE["cache_read_input_tokens"], None)
GEMINI_TOKENS = (GEMINI["promptTokenCount"], GEMINI["candidatesTokenCount"] + GEMINI["thoughtsTokenCount"],
                 GEMINI["cachedContentTokenCount"], GEMINI["thoughtsTokenCount"])
GROQ_TOKENS = (GROQ["prompt_tokens"], GROQ["completion_tokens"], GROQ["cached_tokens"], GROQ["reasoning_tokens"])


# -- clients ------------------------------------------------------------------------------------------


def openai_client(fake: FakeLLMServer, is_async: bool, provider: str = "openai") -> Any:
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    return cls(api_key="sk-fake", base_url=fake.base_url(provider), max_retries=0)


def anthropic_client(fake: FakeLLMServer, is_async: bool) -> Any:
    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    return cls(api_key="sk-ant-fake", base_url=fake.base_url("anthropic"), max_retries=0)


def groq_client(fake: FakeLLMServer, is_async: bool) -> Any:
    cls = groq.AsyncGroq if is_async else groq.Groq
    return cls(api_key="gsk-fake", base_url=fake.base_url("groq"), max_retries=0)


def gemini_client(fake: FakeLLMServer) -> genai.Client:
    return genai.Client(api_key="gemini-fake", http_options=genai_types.HttpOptions(base_url=fake.base_url("gemini")))


SYNC_ASYNC = pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])


# -- OpenAI -------------------------------------------------------------------------------------------


@SYNC_ASYNC
def test_openai_chat_create(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer, user_id="user_1",
                       metadata={"feature": "chat"})
    resp = run(llm.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    assert type(resp) is openai.types.chat.ChatCompletion
    event = only(tracker, ingest, customer)
    assert tokens(event) == CHAT_TOKENS
    assert event["provider"] == "openai"
    assert event["model"] == resp.model == reported_model("openai", "gpt-4o")
    assert event["feature_id"] == "chat-completion"
    assert event["user_id"] == "user_1"
    assert_ids(event, resp.id)
    assert event["metadata"] == {"feature": "chat", "response_id": resp.id}


@SYNC_ASYNC
def test_openai_chat_stream_asks_for_usage_and_hides_the_usage_chunk(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)

    async def read_async() -> list[Any]:
        stream = await llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        assert isinstance(stream, openai.AsyncStream)
        return [chunk async for chunk in stream]

    if is_async:
        chunks = asyncio.run(read_async())
    else:
        stream = llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        assert isinstance(stream, openai.Stream)
        chunks = list(stream)
    assert all(c.choices for c in chunks)  # the usage-only chunk (empty choices) is not shown
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(REPLY_CHUNKS)
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    event = only(tracker, ingest, customer)
    assert tokens(event) == CHAT_TOKENS
    assert "partial" not in event.get("metadata", {})
    assert_ids(event, chunks[0].id)


def test_openai_chat_stream_caller_who_asked_for_usage_sees_the_usage_chunk(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    chunks = list(llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == CHAT["prompt_tokens"]
    assert tokens(only(tracker, ingest, customer)) == CHAT_TOKENS


@SYNC_ASYNC
def test_openai_chat_stream_broken_out_of_early_is_recorded_once_as_partial(fake, tracker, ingest, customer,
                                                                              is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    if is_async:
        async def first_then_break() -> None:
            stream = await llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            async for _ in stream:
                break
            await stream.close()
        asyncio.run(first_then_break())
    else:
        stream = llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        for _ in stream:
            break
        stream.close()
    event = only(tracker, ingest, customer)
    assert event["metadata"]["partial"] is True
    assert event["metadata"]["stream_end"] == "closed"
    assert (event["input_tokens"], event["output_tokens"]) == (0, 0)  # OpenAI sends usage only at the end


def test_openai_chat_stream_as_context_manager_and_with_next(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    chunks = []
    with llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) as stream:
        assert isinstance(stream, openai.Stream)
        with pytest.raises(StopIteration):
            while True:
                chunks.append(next(stream))
    assert chunks and all(c.choices for c in chunks)  # the usage chunk is consumed, not shown
    assert tokens(only(tracker, ingest, customer)) == CHAT_TOKENS


def test_openai_chat_stream_dropped_unfinished_is_recorded_as_abandoned(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    stream = llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    next(stream)
    del stream
    gc.collect()
    event = only(tracker, ingest, customer)
    assert event["metadata"]["stream_end"] == "abandoned"


@SYNC_ASYNC
def test_openai_chat_stream_helper(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    if is_async:
        async def read() -> tuple[list[Any], Any]:
            async with llm.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
                events = [event async for event in stream]
                return events, await stream.get_final_completion()
        events, final = asyncio.run(read())
    else:
        with llm.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
            events = list(stream)
            final = stream.get_final_completion()
    chunk_events = [e for e in events if e.type == "chunk"]
    assert chunk_events and all(e.chunk.choices for e in chunk_events)
    assert final.choices[0].message.content == "".join(REPLY_CHUNKS)
    event = only(tracker, ingest, customer)
    assert tokens(event) == CHAT_TOKENS
    assert_ids(event, final.id)


def test_openai_chat_stream_helper_read_with_get_final_completion_only(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    with llm.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        stream.get_final_completion()
    assert tokens(only(tracker, ingest, customer)) == CHAT_TOKENS


class Answer(BaseModel):
    city: str
    population: int


@SYNC_ASYNC
def test_openai_chat_parse(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    resp = run(llm.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Answer))
    assert isinstance(resp.choices[0].message.parsed, Answer)
    assert tokens(only(tracker, ingest, customer)) == CHAT_TOKENS


def test_beta_namespaces_are_tracked_too(fake, tracker, ingest, customer):
    gpt = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    gpt.beta.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Answer)
    claude = tracker.wrap(client=anthropic_client(fake, False), customer_id=customer)
    claude.beta.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)
    events = recorded(tracker, ingest, customer)
    assert sorted(tokens(e) for e in events) == sorted([CHAT_TOKENS, CLAUDE_TOKENS])


@SYNC_ASYNC
def test_openai_responses_create(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    resp = run(llm.responses.create(model="gpt-4o", input="Hello!"))
    assert type(resp) is openai.types.responses.Response
    event = only(tracker, ingest, customer)
    assert tokens(event) == RESPONSES_TOKENS
    assert_ids(event, resp.id)
    assert event["model"] == resp.model


@SYNC_ASYNC
def test_openai_responses_stream(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)

    async def read_async() -> list[Any]:
        stream = await llm.responses.create(model="gpt-4o", input="Hello!", stream=True)
        return [event async for event in stream]

    events = run(read_async()) if is_async else list(llm.responses.create(model="gpt-4o", input="Hello!",
                                                                         stream=True))
    assert events[-1].type == "response.completed"
    event = only(tracker, ingest, customer)
    assert tokens(event) == RESPONSES_TOKENS
    assert_ids(event, events[-1].response.id)


@SYNC_ASYNC
def test_openai_embeddings(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer, feature_id="search-index")
    resp = run(llm.embeddings.create(model="text-embedding-3-small", input="Hello!"))
    assert len(resp.data[0].embedding) > 0
    event = only(tracker, ingest, customer)
    assert tokens(event) == (USAGE["openai.embeddings"]["prompt_tokens"], 0, None, None)
    assert event["feature_id"] == "search-index"
    assert event["model"] == "text-embedding-3-small"


@SYNC_ASYNC
def test_openrouter_through_the_openai_client(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async, "openrouter"), customer_id=customer)
    kwargs: dict[str, Any] = {"model": "qwen/qwen3-max", "messages": MESSAGES}

    async def both_async() -> None:
        await llm.chat.completions.create(**kwargs)
        async for _ in await llm.chat.completions.create(**kwargs, stream=True):
            pass

    if is_async:
        asyncio.run(both_async())
    else:
        llm.chat.completions.create(**kwargs)
        list(llm.chat.completions.create(**kwargs, stream=True))
    events = recorded(tracker, ingest, customer)
    assert len(events) == 2
    for event in events:
        assert event["provider"] == "openrouter"
        assert event["model"] == "qwen/qwen3-max"
        assert tokens(event) == (OPENROUTER["prompt_tokens"], OPENROUTER["completion_tokens"],
                                 OPENROUTER["cached_tokens"], OPENROUTER["reasoning_tokens"])
        assert event["metadata"]["cost"] == OPENROUTER["cost"]


# -- Anthropic ----------------------------------------------------------------------------------------


@SYNC_ASYNC
def test_anthropic_messages_create(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=anthropic_client(fake, is_async), customer_id=customer)
    msg = run(llm.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=MESSAGES))
    assert type(msg) is anthropic.types.Message
    event = only(tracker, ingest, customer)
    assert tokens(event) == CLAUDE_TOKENS
    assert event["provider"] == "anthropic"
    assert event["model"] == msg.model == reported_model("anthropic", "claude-sonnet-4-6")
    assert event["metadata"]["cache_creation_input_tokens"] == CLAUDE["cache_creation_input_tokens"]
    assert_ids(event, msg.id)


@SYNC_ASYNC
def test_anthropic_messages_create_stream_takes_cumulative_output_once(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=anthropic_client(fake, is_async), customer_id=customer)

    async def read_async() -> list[Any]:
        stream = await llm.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=MESSAGES,
                                           stream=True)
        return [event async for event in stream]

    events = run(read_async()) if is_async else list(
        llm.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=MESSAGES, stream=True))
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert tokens(only(tracker, ingest, customer)) == CLAUDE_TOKENS  # not 367 + 1


@SYNC_ASYNC
def test_anthropic_messages_stream_helper(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=anthropic_client(fake, is_async), customer_id=customer)
    if is_async:
        async def read() -> tuple[str, Any]:
            async with llm.messages.stream(model="claude-sonnet-4-6", max_tokens=1024, messages=MESSAGES) as s:
                text = "".join([t async for t in s.text_stream])
                return text, await s.get_final_message()
        text, final = asyncio.run(read())
    else:
        with llm.messages.stream(model="claude-sonnet-4-6", max_tokens=1024, messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert text == "".join(REPLY_CHUNKS)
    event = only(tracker, ingest, customer)
    assert tokens(event) == CLAUDE_TOKENS
    assert_ids(event, final.id)


def test_anthropic_stream_broken_out_of_early_keeps_the_input_it_saw(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=anthropic_client(fake, False), customer_id=customer)
    with llm.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=MESSAGES, stream=True) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    event = only(tracker, ingest, customer)
    assert event["input_tokens"] == CLAUDE_INPUT
    assert event["output_tokens"] == 1  # message_start's preliminary count
    assert event["metadata"]["partial"] is True


# -- Google Gemini ------------------------------------------------------------------------------------


@SYNC_ASYNC
def test_gemini_generate_content(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=gemini_client(fake), customer_id=customer)
    models = llm.aio.models if is_async else llm.models
    resp = run(models.generate_content(model="gemini-2.5-flash", contents="Why is the sky blue?"))
    assert type(resp) is genai_types.GenerateContentResponse
    event = only(tracker, ingest, customer)
    assert tokens(event) == GEMINI_TOKENS  # thoughts added to output
    assert event["provider"] == "google"
    assert event["model"] == resp.model_version
    assert resp.response_id and assert_ids(event, resp.response_id)


@SYNC_ASYNC
def test_gemini_generate_content_stream_takes_the_last_running_total(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=gemini_client(fake), customer_id=customer)

    async def read_async() -> list[Any]:
        stream = await llm.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi")
        return [chunk async for chunk in stream]

    chunks = run(read_async()) if is_async else list(
        llm.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"))
    assert "".join(c.text for c in chunks) == "".join(REPLY_CHUNKS)
    assert tokens(only(tracker, ingest, customer)) == GEMINI_TOKENS


# -- Groq ---------------------------------------------------------------------------------------------


@SYNC_ASYNC
def test_groq_chat_create_and_stream(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=groq_client(fake, is_async), customer_id=customer)
    kwargs: dict[str, Any] = {"model": "llama-3.1-8b-instant", "messages": MESSAGES}

    async def both_async() -> list[Any]:
        await llm.chat.completions.create(**kwargs)
        return [chunk async for chunk in await llm.chat.completions.create(**kwargs, stream=True)]

    if is_async:
        chunks = asyncio.run(both_async())
    else:
        llm.chat.completions.create(**kwargs)
        chunks = list(llm.chat.completions.create(**kwargs, stream=True))
    assert "stream_options" not in fake.requests[-1].json  # Groq sends x_groq.usage unasked
    assert chunks[-1].x_groq.usage.prompt_tokens == GROQ["prompt_tokens"]
    events = recorded(tracker, ingest, customer)
    assert len(events) == 2
    for event in events:
        assert event["provider"] == "groq"
        assert tokens(event) == GROQ_TOKENS


# -- what the caller can rely on -----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "groq"])
def test_provider_error_propagates_unchanged_and_records_nothing(fake, tracker, ingest, customer, provider):
    fake.fail_next(1, status=500)
    if provider == "gemini":
        llm: Any = tracker.wrap(client=gemini_client(fake), customer_id=customer)
        with pytest.raises(genai_errors.ServerError):
            llm.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    elif provider == "anthropic":
        llm = tracker.wrap(client=anthropic_client(fake, False), customer_id=customer)
        with pytest.raises(anthropic.InternalServerError):
            llm.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)
    else:
        client = groq_client(fake, False) if provider == "groq" else openai_client(fake, False)
        llm = tracker.wrap(client=client, customer_id=customer)
        with pytest.raises(groq.InternalServerError if provider == "groq" else openai.InternalServerError):
            llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert recorded(tracker, ingest, customer) == []


@SYNC_ASYNC
def test_gemini_stream_error_on_first_read_records_nothing(fake, tracker, ingest, customer, is_async):
    # google-genai sends the request when the stream is first read, so the provider error surfaces there
    llm = tracker.wrap(client=gemini_client(fake), customer_id=customer)
    fake.fail_next(1, status=500)

    async def read_async() -> None:
        async for _ in await llm.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"):
            pass

    with pytest.raises(genai_errors.ServerError):
        if is_async:
            asyncio.run(read_async())
        else:
            list(llm.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"))
    assert recorded(tracker, ingest, customer) == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_stream_failing_midway_raises_to_the_caller_and_records_what_was_seen(fake, tracker, ingest, customer,
                                                                              provider):
    fake.cut_next_stream(after_chunks=1)
    seen = []
    if provider == "openai":
        llm: Any = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
        stream = llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError):
            seen.extend(stream)
    else:
        llm = tracker.wrap(client=anthropic_client(fake, False), customer_id=customer)
        stream = llm.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES, stream=True)
        with pytest.raises(Exception, match="incomplete chunked read"):  # what the SDK raises, unchanged
            seen.extend(stream)
    event = only(tracker, ingest, customer)
    assert event["metadata"]["partial"] is True
    assert event["metadata"]["stream_end"] == "error"
    if provider == "anthropic":
        assert event["input_tokens"] == CLAUDE_INPUT


def test_ingest_server_down_the_caller_still_gets_its_answer(fake, customer):
    failures: list[DeliveryFailure] = []
    om = OpenMonetize(api_key=API_KEY, base_url="http://127.0.0.1:9", on_error=failures.append,
                      shutdown_timeout=0.5)
    tracker = create_llm_tracker(client=om)
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    resp = llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert resp.usage.prompt_tokens == CHAT["prompt_tokens"]
    om.shutdown(0.5)
    # nothing lost silently: what could not be delivered is reported, with its numbers
    [event] = [e for failure in failures for e in failure.events]
    assert (event["customer_id"], event["input_tokens"]) == (customer, CHAT["prompt_tokens"])


def test_tracking_failure_never_raises_into_the_caller(fake, ingest, customer, caplog):
    om = OpenMonetize(api_key=API_KEY, base_url=ingest.url)
    tracker = create_llm_tracker(client=om)
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    om.shutdown()  # recording into a shut-down client fails
    with caplog.at_level(logging.ERROR, logger="openmonetize.llm"):
        resp = llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        chunks = list(llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert resp.usage.prompt_tokens == CHAT["prompt_tokens"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(REPLY_CHUNKS)
    assert sum("could not record LLM usage" in r.getMessage() for r in caplog.records) == 2
    assert API_KEY not in caplog.text and API_KEY not in repr(tracker)


def test_full_queue_drops_and_reports_instead_of_waiting(fake, customer):
    failures: list[DeliveryFailure] = []
    om = OpenMonetize(api_key=API_KEY, base_url="http://127.0.0.1:9", on_error=failures.append, max_queue_size=1,
                      block_timeout=3600, shutdown_timeout=0)
    llm = create_llm_tracker(client=om).wrap(client=openai_client(fake, False), customer_id=customer)
    for _ in range(3):  # with block_timeout=3600 a waiting tracker would hang here
        llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    dropped = [f for f in failures if f.kind == "dropped"]
    assert dropped and "not waiting after an LLM call" in dropped[0].reason
    om.shutdown(0)


def test_the_same_response_tracked_twice_bills_once(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    [event] = recorded(tracker, ingest, customer)
    before = ingest.duplicates_received
    tracker.client.track(dict(event))  # the same response, recorded again (same derived id)
    assert recorded(tracker, ingest, customer) == [event]
    assert ingest.duplicates_received == before + 1


def test_wrapped_client_is_transparent(fake, tracker, ingest, customer):
    raw = openai_client(fake, False)
    llm = tracker.wrap(client=raw, customer_id=customer)
    assert isinstance(llm, openai.OpenAI)
    assert llm.base_url == raw.base_url and llm.max_retries == 0
    assert repr(llm) == repr(raw)
    assert inspect.signature(llm.chat.completions.create) == inspect.signature(raw.chat.completions.create)
    assert llm.chat.completions.create.__doc__ == raw.chat.completions.create.__doc__
    # untracked methods and resources pass through as the client's own
    assert type(llm.models) is type(raw.models)
    # with_options returns a tracked client too; `with` yields the wrapped client
    llm.with_options(timeout=5).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with llm as inside:
        assert inside is llm
        inside.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raw.is_closed()
    assert [tokens(e) for e in recorded(tracker, ingest, customer)] == [CHAT_TOKENS, CHAT_TOKENS]


def test_raw_responses_are_recorded_when_parsed(fake, tracker, ingest, customer):
    raw = openai_client(fake, False)
    llm = tracker.wrap(client=raw, customer_id=customer)
    response = llm.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert isinstance(response, openai._legacy_response.LegacyAPIResponse)
    assert response.headers["content-type"].startswith("application/json")
    completion = response.parse()
    assert response.parse() is completion  # parsed once, recorded once
    stream = llm.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True).parse()
    assert isinstance(stream, openai.Stream) and all(chunk.choices for chunk in stream)
    with llm.chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES) as streaming:
        assert streaming.parse().id
    claude = tracker.wrap(client=anthropic_client(fake, False), customer_id=customer)
    claude.messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES).parse()
    events = recorded(tracker, ingest, customer)
    assert sorted(tokens(e) for e in events) == sorted([CHAT_TOKENS] * 3 + [CLAUDE_TOKENS])
    assert completion.id in {e["metadata"]["response_id"] for e in events}


def test_async_streaming_response_is_recorded_when_parsed(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, True), customer_id=customer)

    async def call() -> None:
        async with llm.chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES) as r:
            await r.parse()
        (await llm.responses.with_raw_response.create(model="gpt-4o", input="Hi")).parse()  # legacy: sync parse

    asyncio.run(call())
    assert sorted(tokens(e) for e in recorded(tracker, ingest, customer)) == sorted([CHAT_TOKENS, RESPONSES_TOKENS])


def test_async_wrapped_methods_stay_coroutine_functions(fake, tracker, customer):
    raw = openai_client(fake, True)
    llm = tracker.wrap(client=raw, customer_id=customer)
    assert inspect.iscoroutinefunction(llm.chat.completions.create) == inspect.iscoroutinefunction(
        raw.chat.completions.create)
    gemini = tracker.wrap(client=gemini_client(fake), customer_id=customer)
    assert inspect.iscoroutinefunction(gemini.aio.models.generate_content)


def test_wrap_refuses_bad_arguments_before_any_call(tracker, fake):
    client = openai_client(fake, False)
    with pytest.raises(ValidationError, match="customer_id"):
        tracker.wrap(client=client, customer_id="")
    with pytest.raises(ValidationError, match="metadata"):
        tracker.wrap(client=client, customer_id="c", metadata={"when": object()})
    with pytest.raises(ValueError, match="metadata has 41 keys: at most 40"):
        tracker.wrap(client=client, customer_id="c", metadata={f"k{i}": i for i in range(41)})
    with pytest.raises(ValueError, match="user_id='u' needs a customer_id"):
        tracker.wrap(client=client, user_id="u")
    with pytest.raises(TypeError, match=r"builtins\.dict is not supported"):
        tracker.wrap(client={}, customer_id="c")
    with pytest.raises(ValueError, match="either client="):
        create_llm_tracker(api_key="k", client=tracker.client)


def test_readme_llm_usage_runs_verbatim(fake, monkeypatch, capsys):
    blocks = [b for b in (ROOT / "README.md").read_text().split("```python\n")[1:] if "create_llm_tracker" in b]
    [block] = [b.split("```")[0] for b in blocks]
    with LocalIngestServer(api_key=API_KEY) as server:
        monkeypatch.setenv("OPENMONETIZE_API_KEY", API_KEY)
        monkeypatch.setenv("OPENMONETIZE_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url("openai"))
        namespace: dict[str, Any] = {}
        exec(compile(block, "README.md", "exec"), namespace)
        namespace["tracker"].shutdown(5)
        assert [tokens(e) for e in server.events] == [CHAT_TOKENS, CHAT_TOKENS]
    assert "".join(REPLY_CHUNKS) in capsys.readouterr().out
