"""Who a tracked call is billed to (the wrap, or a `tracker.customer(...)` scope at call time), and gateways that
bend the rules (one response id for every call, inconsistent counts, no usage, OpenAI-compatible hosts).

Real provider SDKs against the fake provider server, events delivered to a real LocalIngestServer."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import groq
import openai
import pytest
import test_llm
from conftest import API_KEY
from google import genai
from test_llm import CHAT, CHAT_TOKENS, MESSAGES, openai_client, tokens

from openmonetize import DeliveryFailure, OpenMonetize, create_llm_tracker
from openmonetize.lib.llm.routes import detect_provider
from openmonetize.lib.llm.tracker import LLMTracker
from openmonetize.testing import LocalIngestServer
from openmonetize.testing.fake_llm import USAGE, FakeLLMServer

# test_llm's fixtures: a fake provider server and an ingest server per module, a customer per test
fake, ingest, customer = test_llm.fake, test_llm.ingest, test_llm.customer


class Reports:
    """on_error, collected."""

    def __init__(self) -> None:
        self.failures: list[DeliveryFailure] = []

    def __call__(self, failure: DeliveryFailure) -> None:
        self.failures.append(failure)

    def of(self, kind: str) -> list[DeliveryFailure]:
        return [f for f in self.failures if f.kind == kind]


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def tracker(ingest: LocalIngestServer, reports: Reports) -> Iterator[LLMTracker]:
    tracker = create_llm_tracker(api_key=API_KEY, base_url=ingest.url, flush_interval=0.02, on_error=reports)
    yield tracker
    tracker.shutdown(5)


def recorded(tracker: LLMTracker, ingest: LocalIngestServer, *customers: str) -> list[dict[str, Any]]:
    assert tracker.flush(10)
    return [event for event in ingest.events if event["customer_id"] in customers]


def gateway(fake: FakeLLMServer, name: str, is_async: bool = False) -> Any:
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    return cls(api_key="sk-fake", base_url=fake.base_url(name), max_retries=0)


# -- attribution at call time ---------------------------------------------------------------------------


def test_a_client_wrapped_without_customer_bills_the_customer_of_the_scope(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), metadata={"surface": "api"})
    with tracker.customer(customer, user_id="user_7", metadata={"plan": "pro"}) as scope:
        assert scope.customer_id == customer
        llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    [event] = recorded(tracker, ingest, customer)
    assert (event["customer_id"], event["user_id"]) == (customer, "user_7")
    assert tokens(event) == CHAT_TOKENS
    # the scope's metadata, then the wrap's, then the tracker's own keys
    assert {k: event["metadata"][k] for k in ("plan", "surface")} == {"plan": "pro", "surface": "api"}


def test_a_wrap_that_names_its_customer_ignores_the_scope(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    with tracker.customer(customer + "_other", user_id="someone_else"):
        llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    [event] = recorded(tracker, ingest, customer, customer + "_other")
    assert event["customer_id"] == customer and "user_id" not in event


def test_no_customer_anywhere_is_reported_untracked_and_never_raised(fake, tracker, ingest, customer, reports,
                                                                     caplog):
    llm = tracker.wrap(client=openai_client(fake, False))
    with caplog.at_level(logging.ERROR, logger="openmonetize"):
        resp = llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert resp.usage is not None and resp.usage.prompt_tokens == CHAT["prompt_tokens"]
    assert tracker.flush(10)
    [failure] = reports.of("untracked")
    [event] = failure.events
    # what was known, as it would have been sent: enough to complete and track it by hand
    assert "customer_id" not in event
    assert (event["event_type"], event["input_tokens"], event["metadata"]["response_id"]) == (
        "TOKEN_USAGE", CHAT["prompt_tokens"], resp.id)
    assert "no customer" in failure.reason and "tracker.customer" in failure.reason
    assert "untracked" in caplog.text and API_KEY not in caplog.text
    event["customer_id"] = customer  # completed by hand, it is a valid event
    tracker.client.track(event)
    assert [e["event_id"] for e in recorded(tracker, ingest, customer)] == [event["event_id"]]


def test_scopes_are_per_thread(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False))
    inside = threading.Barrier(4)

    def work(n: int) -> None:
        with tracker.customer(f"{customer}_{n}"):
            inside.wait(30)  # every thread is inside its own scope at once
            llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    events = recorded(tracker, ingest, *(f"{customer}_{n}" for n in range(4)))
    assert sorted(e["customer_id"] for e in events) == [f"{customer}_{n}" for n in range(4)]


def test_scopes_are_per_asyncio_task_and_fixed_when_the_call_starts(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, True))

    async def one(n: int, started: asyncio.Event) -> Any:
        with tracker.customer(f"{customer}_{n}"):
            stream = await llm.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        started.set()
        return stream  # read after the scope has ended: billed to the scope the call started in

    async def main() -> None:
        started = [asyncio.Event() for _ in range(3)]
        streams = await asyncio.gather(*(one(n, started[n]) for n in range(3)))
        for stream in streams:
            async for _ in stream:
                pass

    asyncio.run(main())
    events = recorded(tracker, ingest, *(f"{customer}_{n}" for n in range(3)))
    assert sorted(e["customer_id"] for e in events) == [f"{customer}_{n}" for n in range(3)]
    assert all(tokens(e) == CHAT_TOKENS for e in events)


def test_two_trackers_do_not_share_scopes(fake, ingest, customer, reports):
    first = create_llm_tracker(api_key=API_KEY, base_url=ingest.url, on_error=reports)
    second = create_llm_tracker(client=first.client)
    llm = second.wrap(client=openai_client(fake, False))
    with first.customer(customer):
        llm.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert first.flush(10)
    assert len(reports.of("untracked")) == 1
    first.shutdown(5)


def test_scope_arguments_are_checked_when_the_scope_opens(tracker):
    with pytest.raises(ValueError, match="customer_id"), tracker.customer(""):
        pass
    with pytest.raises(ValueError, match="metadata has 41 keys"), tracker.customer("c", metadata={
            f"k{i}": i for i in range(41)}):
        pass


# -- gateways that bend the rules --------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_gateway_repeating_one_response_id_bills_every_call(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=gateway(fake, "gateway-same-id", is_async), customer_id=customer, provider="mygateway")

    async def calls() -> list[Any]:
        return [await llm.chat.completions.create(model="m", messages=MESSAGES) for _ in range(50)]

    replies = asyncio.run(calls()) if is_async else [
        llm.chat.completions.create(model="m", messages=MESSAGES) for _ in range(50)]
    assert {r.id for r in replies} == {"chatcmpl-gateway"}
    events = recorded(tracker, ingest, customer)
    assert len(events) == 50 and len({e["event_id"] for e in events}) == 50
    assert all(uuid.UUID(e["event_id"]).version == 7 for e in events)
    assert {e["metadata"]["response_id"] for e in events} == {"chatcmpl-gateway"}
    assert {e["provider"] for e in events} == {"mygateway"}


def test_a_raw_response_parsed_twice_bills_once(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=gateway(fake, "gateway-same-id"), customer_id=customer)
    raw = llm.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.parse() is raw.parse()
    assert len(recorded(tracker, ingest, customer)) == 1


@pytest.mark.parametrize(("name", "part", "whole"), [
    ("gateway-cached-above-prompt", "cached_input_tokens", "input_tokens"),
    ("gateway-reasoning-above-completion", "reasoning_tokens", "output_tokens"),
])
def test_inconsistent_counts_are_capped_flagged_and_reported_never_lost(fake, tracker, ingest, customer, reports,
                                                                        name, part, whole):
    n = USAGE[f"{name}.chat"]
    llm = tracker.wrap(client=gateway(fake, name), customer_id=customer)
    for _ in range(50):
        llm.chat.completions.create(model="m", messages=MESSAGES)
    chunks = list(llm.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(chunk.choices for chunk in chunks)  # the usage chunk stays hidden
    events = recorded(tracker, ingest, customer)
    assert len(events) == 51
    for event in events:
        assert (event["input_tokens"], event["output_tokens"]) == (n["prompt_tokens"], n["completion_tokens"])
        assert event[part] == event[whole]  # capped at the whole: the totals are what was charged
        reported = n["cached_tokens"] if part == "cached_input_tokens" else n["reasoning_tokens"]
        assert event["metadata"]["usage_adjusted"] == (
            f"{part}={reported} exceeds {whole}={event[whole]}: recorded as {event[whole]}")
    adjusted = reports.of("adjusted")
    assert len(adjusted) == 51
    assert {f.events[0]["event_id"] for f in adjusted} == {e["event_id"] for e in events}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_usage_null_bills_a_zero_token_event_flagged_as_such(fake, tracker, ingest, customer, stream):
    llm = tracker.wrap(client=gateway(fake, "gateway-null-usage"), customer_id=customer)
    reply = llm.chat.completions.create(model="m", messages=MESSAGES, stream=stream)
    if stream:
        list(reply)
    [event] = recorded(tracker, ingest, customer)
    assert tokens(event) == (0, 0, None, None)
    assert event["metadata"]["partial"] is True
    assert event["metadata"]["stream_end"] == "no_usage"


# -- OpenAI-compatible providers -------------------------------------------------------------------------


def test_azure_openai_is_recorded_as_azure(fake, tracker, ingest, customer):
    client = openai.AzureOpenAI(api_key="az-fake", azure_endpoint=fake.base_url("azure"), api_version="2024-10-21",
                                max_retries=0)
    llm = tracker.wrap(client=client, customer_id=customer)
    resp = llm.chat.completions.create(model="my-gpt4o-deployment", messages=MESSAGES)
    assert type(resp) is openai.types.chat.ChatCompletion
    [event] = recorded(tracker, ingest, customer)
    n = USAGE["azure.chat"]
    assert (event["provider"], event["model"]) == ("azure", "my-gpt4o-deployment")
    assert tokens(event) == (n["prompt_tokens"], n["completion_tokens"], n["cached_tokens"], n["reasoning_tokens"])


@pytest.mark.parametrize(("base_url", "provider"), [
    ("https://api.deepseek.com", "deepseek"),
    ("https://api.x.ai/v1", "xai"),
    ("https://api.together.xyz/v1", "together"),
    ("https://api.fireworks.ai/inference/v1", "fireworks"),
    ("https://api.mistral.ai/v1", "mistral"),
    ("https://api.groq.com/openai/v1", "groq"),
    ("https://generativelanguage.googleapis.com/v1beta/openai/", "google"),
    ("https://openrouter.ai/api/v1", "openrouter"),
    ("https://api.perplexity.ai", "perplexity"),
    ("https://my-resource.openai.azure.com/openai/v1/", "azure"),
    ("https://api.openai.com/v1", "openai"),
    ("http://localhost:4000", "openai"),  # a proxy of your own: pass provider= to wrap
])
def test_openai_compatible_hosts_name_their_provider(base_url, provider):
    for cls in (openai.OpenAI, openai.AsyncOpenAI):
        assert detect_provider(cls(api_key="sk-fake", base_url=base_url)) == provider


def test_other_clients_keep_their_package_name():
    assert detect_provider(anthropic.Anthropic(api_key="k")) == "anthropic"
    assert detect_provider(groq.Groq(api_key="k")) == "groq"
    assert detect_provider(genai.Client(api_key="k")) == "google"
    assert detect_provider(openai.AsyncAzureOpenAI(api_key="k", azure_endpoint="https://x.example",
                                                   api_version="2024-10-21")) == "azure"


def test_an_event_that_cannot_be_built_is_reported_untracked(fake, ingest, customer, reports):
    om = OpenMonetize(api_key=API_KEY, base_url=ingest.url, on_error=reports)
    tracker = create_llm_tracker(client=om)
    # a model name longer than the spec allows (256): the event breaks a rule after a paid call
    llm = tracker.wrap(client=gateway(fake, "gateway-same-id"), customer_id=customer)
    llm.chat.completions.create(model="m" * 300, messages=MESSAGES)
    assert om.flush(10)
    [failure] = reports.of("untracked")
    assert "model" in failure.reason and failure.events[0]["customer_id"] == customer
    om.shutdown(5)


def test_many_token_kinds_at_once_fold_into_one_key_so_the_event_is_never_refused(ingest, customer, reports):
    """The tracker keeps 10 metadata keys for itself; a call reporting more kinds than fit keeps them all, nested."""
    from openmonetize.lib.llm.usage import Observation, Usage

    tracker = create_llm_tracker(api_key=API_KEY, base_url=ingest.url, on_error=reports)
    billing = tracker.billing(provider="openai", customer_id=customer, metadata={f"k{i}": i for i in range(40)})
    kinds = {f"kind_{i}_tokens": i + 1 for i in range(12)}
    billing.start({"model": "gpt-4o"}).record(Observation(Usage(10, 5, extra=kinds), "gpt-4o", "resp_1"), "error")
    assert tracker.flush(10)
    [event] = [e for e in ingest.events if e["customer_id"] == customer]
    assert event["metadata"]["usage_details"] == kinds
    assert (event["metadata"]["response_id"], event["metadata"]["stream_end"]) == ("resp_1", "error")
    assert len(event["metadata"]) == 40 + 4
    assert reports.failures == []
    tracker.shutdown(5)
