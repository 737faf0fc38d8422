"""LangChain's callback handler and a pydantic-ai agent on a wrapped client, driving the real libraries
(langchain-openai, langchain-anthropic, pydantic-ai) against the fake provider server over loopback, with
events delivered by the real OpenMonetize client to a real LocalIngestServer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import anthropic
import groq
import openai
import pytest
import test_llm
from conftest import API_KEY
from google import genai
from google.genai import types as genai_types
from langchain_anthropic import ChatAnthropic
from langchain_core.caches import InMemoryCache
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import OpenAIAPIError
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.google import GoogleModel
from pydantic_ai.models.groq import GroqModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.google import GoogleProvider
from pydantic_ai.providers.groq import GroqProvider
from pydantic_ai.providers.openai import OpenAIProvider
from test_llm import only, recorded, tokens

from openmonetize import DeliveryFailure, OpenMonetize, create_llm_tracker
from openmonetize.lib.llm import langchain as lc
from openmonetize.lib.llm.tracker import LLMTracker
from openmonetize.testing.fake_llm import REPLY_CHUNKS, REPLY_TEXT, USAGE, FakeLLMServer, reported_model

T = TypeVar("T")
CHAT = USAGE["openai.chat"]
CLAUDE = USAGE["anthropic.messages"]
OPENROUTER = USAGE["openrouter.chat"]
CHAT_TOKENS = (CHAT["prompt_tokens"], CHAT["completion_tokens"], CHAT["cached_tokens"], CHAT["reasoning_tokens"])
CLAUDE_INPUT = CLAUDE["input_tokens"] + CLAUDE["cache_creation_input_tokens"] + CLAUDE["cache_read_input_tokens"]
CLAUDE_TOKENS = (CLAUDE_INPUT, CLAUDE["output_tokens"], CLAUDE["cache_read_input_tokens"], None)


# test_llm's fixtures: a fake provider server, an ingest server and a tracker per module, a customer per test
fake, ingest, tracker, customer = test_llm.fake, test_llm.ingest, test_llm.tracker, test_llm.customer


@pytest.fixture(scope="module")
def aio() -> Iterator[Loop]:
    """One event loop for the module's async calls: langchain-openai shares one cached async HTTP client per
    base URL across models, and its pooled connections belong to the loop that opened them."""
    loop = asyncio.new_event_loop()
    yield Loop(loop)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


class Loop:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


def chat_openai(fake: FakeLLMServer, provider: str = "openai", **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o", base_url=fake.base_url(provider), api_key="sk-fake",
                      max_retries=0, **kwargs)


def chat_anthropic(fake: FakeLLMServer) -> ChatAnthropic:
    return ChatAnthropic(model="claude-haiku-4-5", base_url=fake.base_url("anthropic"),
                         api_key="sk-ant-fake", max_retries=0)


def text(chunks: list[Any]) -> str:
    return "".join(chunk.content for chunk in chunks)


# -- ChatOpenAI ---------------------------------------------------------------------------------------


def test_invoke_bills_one_event_from_usage_metadata(fake, tracker, ingest, customer):
    handler = tracker.langchain_handler(customer_id=customer, user_id="user_1", metadata={"feature": "chat"},
                                        team_id="team_1")
    reply = chat_openai(fake).invoke("Hello!", config={"callbacks": [handler]})
    assert type(reply) is AIMessage and reply.content == REPLY_TEXT
    event = only(tracker, ingest, customer)
    assert event["event_type"] == "TOKEN_USAGE"
    assert tokens(event) == CHAT_TOKENS
    assert reply.usage_metadata is not None
    assert event["input_tokens"] == reply.usage_metadata["input_tokens"]  # cached ones are inside
    assert (event["provider"], event["model"]) == ("openai", reported_model("openai", "gpt-4o"))
    assert (event["user_id"], event["team_id"], event["feature_id"]) == ("user_1", "team_1", "chat-completion")
    assert uuid.UUID(event["event_id"]).version == 7
    assert event["metadata"] == {"feature": "chat", "response_id": reply.response_metadata["id"]}
    assert event["metadata"]["response_id"].startswith("chatcmpl-")


def test_ainvoke_and_the_model_s_own_callbacks(fake, tracker, ingest, customer, aio):
    handler = tracker.langchain_handler(customer_id=customer)
    model = chat_openai(fake, callbacks=[handler])  # attached to the model instead of the call
    reply = aio.run(model.ainvoke("Hello!"))
    assert type(reply) is AIMessage
    event = only(tracker, ingest, customer)
    assert tokens(event) == CHAT_TOKENS
    assert event["metadata"]["response_id"] == reply.response_metadata["id"]


@pytest.mark.parametrize("is_async", [False, True], ids=["stream", "astream"])
def test_a_stream_bills_once_with_its_usage(fake, tracker, ingest, customer, aio, is_async):
    handler = tracker.langchain_handler(customer_id=customer)
    model = chat_openai(fake, stream_usage=True)

    async def consume() -> list[Any]:
        return [chunk async for chunk in model.astream("Hello!", config={"callbacks": [handler]})]

    chunks = aio.run(consume()) if is_async else list(model.stream("Hello!", config={"callbacks": [handler]}))
    assert all(type(chunk) is AIMessageChunk for chunk in chunks)
    assert text(chunks) == "".join(REPLY_CHUNKS)
    event = only(tracker, ingest, customer)
    assert tokens(event) == CHAT_TOKENS
    assert event["model"] == reported_model("openai", "gpt-4o")
    assert "metadata" not in event  # OpenAI streams give LangChain no response id; nothing partial


def test_a_stream_without_stream_usage_bills_a_flagged_zero_token_event(fake, tracker, ingest, customer):
    """ChatOpenAI asks for stream usage only for OpenAI's own base URL: elsewhere the call is still recorded."""
    handler = tracker.langchain_handler(customer_id=customer)
    model = chat_openai(fake)
    assert model.stream_usage is None  # a base_url of its own: langchain-openai leaves stream usage off
    chunks = list(model.stream("Hello!", config={"callbacks": [handler]}))
    assert text(chunks) == "".join(REPLY_CHUNKS)
    event = only(tracker, ingest, customer)
    assert tokens(event) == (0, 0, None, None)
    assert event["metadata"] == {"partial": True, "stream_end": "no_usage"}
    assert event["model"] == reported_model("openai", "gpt-4o")


@pytest.mark.parametrize("is_async", [False, True], ids=["batch", "abatch"])
def test_batch_bills_each_call(fake, tracker, ingest, customer, aio, is_async):
    handler = tracker.langchain_handler(customer_id=customer)
    model = chat_openai(fake)
    inputs: list[Any] = ["one", "two", "three"]
    config: Any = {"callbacks": [handler]}
    replies = aio.run(model.abatch(inputs, config=config)) if is_async else model.batch(inputs, config=config)
    assert len(replies) == 3
    events = recorded(tracker, ingest, customer)
    assert [tokens(event) for event in events] == [CHAT_TOKENS] * 3
    assert len({event["event_id"] for event in events}) == 3
    assert {event["metadata"]["response_id"] for event in events} == {r.response_metadata["id"] for r in replies}


def test_a_chain_bills_only_its_llm_call(fake, tracker, ingest, customer):
    handler = tracker.langchain_handler(customer_id=customer)
    chain = ChatPromptTemplate.from_messages([("user", "Say {what}")]) | chat_openai(fake) | StrOutputParser()
    assert chain.invoke({"what": "hello"}, config={"callbacks": [handler]}) == REPLY_TEXT
    assert tokens(only(tracker, ingest, customer)) == CHAT_TOKENS


def test_an_answer_from_langchain_s_cache_bills_nothing(fake, tracker, ingest, customer):
    handler = tracker.langchain_handler(customer_id=customer)
    model = chat_openai(fake, cache=InMemoryCache())
    before = len(fake.requests)
    first = model.invoke("Hello!", config={"callbacks": [handler]})
    again = model.invoke("Hello!", config={"callbacks": [handler]})  # replayed, with the first call's usage
    assert again.content == first.content and len(fake.requests) == before + 1
    assert again.usage_metadata is not None and again.usage_metadata["input_tokens"] == CHAT["prompt_tokens"]
    assert [tokens(event) for event in recorded(tracker, ingest, customer)] == [CHAT_TOKENS]
    assert "open_runs=0" in repr(handler)


def test_an_openai_compatible_host_is_named_and_its_cost_kept(fake, tracker, ingest, customer):
    handler = tracker.langchain_handler(customer_id=customer)
    chat_openai(fake, "openrouter").invoke("Hello!", config={"callbacks": [handler]})
    event = only(tracker, ingest, customer)
    assert event["provider"] == "openrouter"  # ChatOpenAI says "openai"; its base URL says where it went
    assert tokens(event) == (OPENROUTER["prompt_tokens"], OPENROUTER["completion_tokens"],
                             OPENROUTER["cached_tokens"], OPENROUTER["reasoning_tokens"])
    assert event["metadata"]["cost"] == OPENROUTER["cost"]


def test_provider_can_be_named(fake, tracker, ingest, customer):
    handler = tracker.langchain_handler(customer_id=customer, provider="my-gateway")
    chat_openai(fake).invoke("Hello!", config={"callbacks": [handler]})
    assert only(tracker, ingest, customer)["provider"] == "my-gateway"


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_provider_error_reaches_the_caller_as_langchain_s_type_and_bills_nothing(fake, tracker, ingest, customer,
                                                                                 aio, is_async):
    handler = tracker.langchain_handler(customer_id=customer)
    model = chat_openai(fake)
    fake.fail_next(1, 500)
    with pytest.raises(OpenAIAPIError) as raised:
        if is_async:
            aio.run(model.ainvoke("Hello!", config={"callbacks": [handler]}))
        else:
            model.invoke("Hello!", config={"callbacks": [handler]})
    assert isinstance(raised.value, openai.InternalServerError)  # LangChain's type, over the SDK's own
    fake.fail_next(1, 500)
    with pytest.raises(OpenAIAPIError):
        list(model.stream("Hello!", config={"callbacks": [handler]}))
    assert recorded(tracker, ingest, customer) == []
    assert "open_runs=0" in repr(handler)  # nothing left behind


def test_a_stream_cut_mid_way_is_recorded_as_partial(fake, tracker, ingest, customer):
    handler = tracker.langchain_handler(customer_id=customer)
    fake.cut_next_stream(after_chunks=1)
    seen: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        seen.extend(chat_openai(fake, stream_usage=True).stream("Hello!", config={"callbacks": [handler]}))
    assert seen  # the provider was generating when the stream broke, as a wrapped stream's `error`
    event = only(tracker, ingest, customer)
    assert tokens(event) == (0, 0, None, None)  # OpenAI's usage comes last: none seen yet
    assert event["metadata"] == {"partial": True, "stream_end": "error"}


def test_a_stream_left_early_is_recorded_as_closed(fake, tracker, ingest, customer):
    handler = tracker.langchain_handler(customer_id=customer)
    stream: Any = chat_anthropic(fake).stream("Hello!", config={"callbacks": [handler]})
    for _chunk in stream:
        break
    stream.close()
    event = only(tracker, ingest, customer)
    assert tokens(event) == (0, 0, None, None)  # langchain-anthropic reports all of the usage at the end
    assert event["model"] == reported_model("anthropic", "claude-haiku-4-5")
    assert event["metadata"] == {"partial": True, "stream_end": "closed"}


def test_the_handler_never_raises_into_langchain(tracker, caplog):
    handler = tracker.langchain_handler(customer_id="cust_never_raises")
    run_id = uuid.uuid4()
    handler.on_llm_end(LLMResult(generations=[]), run_id=run_id)  # a run it never saw start
    handler.on_chat_model_start(None, [], run_id=run_id, metadata=None)  # nothing known about the model
    weird: Any = LLMResult(generations=[[ChatGeneration(message=AIMessage(content="", response_metadata={}))]])
    weird.llm_output = {"token_usage": "not a mapping", "model_name": 7}
    handler.on_llm_end(weird, run_id=run_id)
    assert tracker.flush(10)
    handler.on_llm_error(ValueError("boom"), run_id=uuid.uuid4(), response=None)
    assert "open_runs=0" in repr(handler)


def test_runs_that_never_end_are_bounded(tracker, ingest, customer, monkeypatch, caplog):
    monkeypatch.setattr(lc, "MAX_OPEN_RUNS", 3)
    handler = tracker.langchain_handler(customer_id=customer)
    runs = [uuid.uuid4() for _ in range(5)]
    for run_id in runs:
        handler.on_chat_model_start({}, [], run_id=run_id, metadata={"ls_provider": "openai"})
    assert "open_runs=3" in repr(handler)
    assert sum("will not be billed" in record.getMessage() for record in caplog.records) == 2
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage(content="", usage_metadata={
        "input_tokens": 5, "output_tokens": 2, "total_tokens": 7}))]])
    for run_id in runs:
        handler.on_llm_end(result, run_id=run_id)
    assert [tokens(event) for event in recorded(tracker, ingest, customer)] == [(5, 2, None, None)] * 3
    assert "open_runs=0" in repr(handler)


def test_bad_arguments_raise_at_the_handler(tracker):
    with pytest.raises(ValueError, match="needs a customer_id"):
        tracker.langchain_handler(user_id="user_1")
    with pytest.raises(ValueError):
        tracker.langchain_handler(customer_id="")


# -- who pays ---------------------------------------------------------------------------------------


def test_a_customer_scope_pays_sync_async_and_batch(fake, tracker, ingest, customer, aio):
    handler = tracker.langchain_handler(metadata={"via": "langchain"})  # no customer: the scope's
    model = chat_openai(fake)
    config: Any = {"callbacks": [handler]}
    pair: list[Any] = ["one", "two"]
    with tracker.customer(customer, user_id="user_9", metadata={"plan": "pro"}):
        model.invoke("Hello!", config=config)
        model.batch(pair, config=config)  # LangChain's worker threads run in a copy of the context
        list(model.stream("Hello!", config=config, stream_usage=True))

    async def in_a_task() -> None:
        with tracker.customer(customer, user_id="user_9", metadata={"plan": "pro"}):
            await model.ainvoke("Hello!", config=config)
            await model.abatch(pair, config=config)

    aio.run(in_a_task())
    events = recorded(tracker, ingest, customer)
    assert len(events) == 7
    assert all(event["user_id"] == "user_9" for event in events)
    assert all(event["metadata"]["plan"] == "pro" and event["metadata"]["via"] == "langchain" for event in events)
    assert [tokens(event) for event in events] == [CHAT_TOKENS] * 7


def test_no_customer_anywhere_is_reported_not_raised(fake, ingest):
    failures: list[DeliveryFailure] = []
    om = OpenMonetize(api_key=API_KEY, base_url=ingest.url, on_error=failures.append)
    tracker = create_llm_tracker(client=om)
    handler = tracker.langchain_handler()
    reply = chat_openai(fake).invoke("Hello!", config={"callbacks": [handler]})
    assert reply.content == REPLY_TEXT
    [failure] = failures
    assert failure.kind == "untracked"
    assert failure.events[0]["input_tokens"] == CHAT["prompt_tokens"]
    om.shutdown(5)


# -- other chat models ------------------------------------------------------------------------------


def test_chat_anthropic_invoke_and_stream(fake, tracker, ingest, customer):
    handler = tracker.langchain_handler(customer_id=customer)
    model = chat_anthropic(fake)
    reply = model.invoke("Hello!", config={"callbacks": [handler]})
    chunks = list(model.stream("Hello!", config={"callbacks": [handler]}))
    assert text(chunks) == "".join(REPLY_CHUNKS)
    invoked, streamed = recorded(tracker, ingest, customer)
    # langchain-anthropic adds Anthropic's separate cache counts into input_tokens, as the tracker does
    assert tokens(invoked) == tokens(streamed) == CLAUDE_TOKENS
    assert invoked["provider"] == streamed["provider"] == "anthropic"
    assert invoked["model"] == streamed["model"] == reported_model("anthropic", "claude-haiku-4-5")
    written = CLAUDE["cache_creation_input_tokens"]
    # answered with writes by TTL, langchain-anthropic reports them by TTL only (its `cache_creation` is 0)
    assert invoked["metadata"] == {"response_id": reply.response_metadata["id"], "cache_creation_input_tokens": written,
                                   "cache_creation_5m_input_tokens": written}
    assert streamed["metadata"] == {"cache_creation_input_tokens": written}


def test_a_completion_model_bills_through_on_llm_start(tracker, ingest, customer):
    """A non-chat LLM (`on_llm_start`) that reports no usage is still recorded, flagged."""
    handler = tracker.langchain_handler(customer_id=customer)
    assert FakeListLLM(responses=["fine"]).invoke("Hello?", config={"callbacks": [handler]}) == "fine"
    event = only(tracker, ingest, customer)
    assert event["provider"] == "fakelist" and tokens(event) == (0, 0, None, None)
    assert event["metadata"] == {"partial": True, "stream_end": "no_usage"}


def test_importing_openmonetize_does_not_import_langchain():
    code = ("import sys, openmonetize; from openmonetize import create_llm_tracker; "
            "print([m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'pydantic_ai')])")
    assert subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip() == "[]"


# -- pydantic-ai ------------------------------------------------------------------------------------


def test_a_pydantic_ai_agent_on_a_wrapped_client_bills_each_request_of_its_tool_loop(fake, tracker, ingest,
                                                                                      customer):
    client = openai.AsyncOpenAI(api_key="sk-fake", base_url=fake.base_url("openai"), max_retries=0)
    llm = tracker.wrap(client=client, customer_id=customer)
    agent = Agent(OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=llm)))
    cities: list[str] = []

    @agent.tool_plain
    def weather(city: str) -> str:
        """The weather in a city."""
        cities.append(city)
        return f"sunny in {city}"

    result = agent.run_sync("What is the weather in Paris?")
    assert result.output == REPLY_TEXT
    assert len(cities) == 1  # the model asked for the tool once, then answered
    assert result.usage.requests == 2
    events = recorded(tracker, ingest, customer)
    assert [tokens(event) for event in events] == [CHAT_TOKENS] * 2
    assert all(event["provider"] == "openai" and event["model"] == reported_model("openai", "gpt-4o")
               for event in events)
    assert len({event["metadata"]["response_id"] for event in events}) == 2
    assert result.usage.input_tokens == sum(event["input_tokens"] for event in events)


def test_the_fake_answers_a_tool_call_until_a_tool_message_answers_it(fake):
    client = openai.OpenAI(api_key="sk-fake", base_url=fake.base_url("openai"), max_retries=0)
    tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    asked = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Paris?"}],
                                           tools=tools)
    [choice] = asked.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [tool_call] = choice.message.tool_calls or []
    assert tool_call.type == "function"
    assert (tool_call.function.name, json.loads(tool_call.function.arguments)) == ("weather", {"city": "fake"})
    assert asked.usage is not None and asked.usage.prompt_tokens == CHAT["prompt_tokens"]
    answered = client.chat.completions.create(model="gpt-4o", tools=tools, messages=[
        {"role": "user", "content": "Paris?"}, choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": tool_call.id, "content": "sunny"}])
    assert answered.choices[0].finish_reason == "stop" and answered.choices[0].message.content == REPLY_TEXT


def _pydantic_ai_model(fake: FakeLLMServer, tracker: LLMTracker, customer: str, provider: str) -> Any:
    if provider == "anthropic":
        client: Any = anthropic.AsyncAnthropic(api_key="sk-ant-fake", base_url=fake.base_url("anthropic"),
                                               max_retries=0)
        return AnthropicModel("claude-haiku-4-5", provider=AnthropicProvider(
            anthropic_client=tracker.wrap(client=client, customer_id=customer)))
    if provider == "groq":
        client = groq.AsyncGroq(api_key="gsk-fake", base_url=fake.base_url("groq"), max_retries=0)
        return GroqModel("llama-3.3-70b-versatile", provider=GroqProvider(
            groq_client=tracker.wrap(client=client, customer_id=customer)))
    client = genai.Client(api_key="gemini-fake", http_options=genai_types.HttpOptions(base_url=fake.base_url("gemini")))
    return GoogleModel("gemini-2.5-flash", provider=GoogleProvider(
        client=tracker.wrap(client=client, customer_id=customer)))


@pytest.mark.parametrize("provider", ["anthropic", "groq", "google"])
def test_pydantic_ai_agents_on_the_other_wrapped_clients(fake, tracker, ingest, customer, provider):
    result = Agent(_pydantic_ai_model(fake, tracker, customer, provider)).run_sync("Hello!")
    assert result.output == REPLY_TEXT
    event = only(tracker, ingest, customer)
    assert event["provider"] == provider
    assert event["input_tokens"] == result.usage.input_tokens
