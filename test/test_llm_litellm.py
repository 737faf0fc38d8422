"""LiteLLM through the tracker: the real `litellm` module, wrapped, driving the fake provider server over
loopback, with events delivered by the real OpenMonetize client to a real LocalIngestServer.

LiteLLM downloads its price list at import unless LITELLM_LOCAL_MODEL_COST_MAP is set; nothing here may
reach the network, which a socket guard checks for every test.
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no price list download

import asyncio
import inspect
import io
import json
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
import test_llm
from conftest import API_KEY, ROOT
from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper
from test_llm import only, recorded, tokens

from openmonetize import create_llm_tracker
from openmonetize.lib.llm.tracker import LLMTracker
from openmonetize.testing.fake_llm import REPLY_CHUNKS, SPEECH_AUDIO, USAGE, FakeLLMServer, reported_model

litellm.telemetry = False

CHAT = USAGE["openai.chat"]
CLAUDE = USAGE["anthropic.messages"]
GEMINI = USAGE["gemini.generateContent"]
MESSAGES: Any = [{"role": "user", "content": "Hello!"}]
CHAT_TOKENS = (CHAT["prompt_tokens"], CHAT["completion_tokens"], CHAT["cached_tokens"], CHAT["reasoning_tokens"])
# LiteLLM folds Anthropic's cache writes and reads into prompt_tokens, as the tracker's own reader does
CLAUDE_TOKENS = (CLAUDE["input_tokens"] + CLAUDE["cache_creation_input_tokens"] + CLAUDE["cache_read_input_tokens"],
                 CLAUDE["output_tokens"], CLAUDE["cache_read_input_tokens"], 0)
SYNC_ASYNC = pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])


# -- no network ---------------------------------------------------------------------------------------

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse, and remember, any connection or lookup beyond loopback (LiteLLM's price list, telemetry...)."""
    attempts: list[Any] = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def outside(address: Any) -> bool:
        return isinstance(address, tuple) and address[0] not in _LOOPBACK

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if outside(address):
            attempts.append(address)
            raise OSError(f"test_llm_litellm: no network ({address!r})")
        return connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        if outside(address):
            attempts.append(address)
            raise OSError(f"test_llm_litellm: no network ({address!r})")
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in _LOOPBACK and host is not None:
            attempts.append(host)
            raise socket.gaierror(f"test_llm_litellm: no network ({host!r})")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert attempts == []


# -- servers and the tracker ----------------------------------------------------------------------------

# test_llm's fixtures: a fake provider server, an ingest server and a tracker per module, a customer per test
fake, ingest, tracker, customer = test_llm.fake, test_llm.ingest, test_llm.tracker, test_llm.customer


@pytest.fixture
def llm(tracker: LLMTracker, customer: str) -> Any:
    return tracker.wrap(client=litellm, customer_id=customer)


def run(value: Any) -> Any:
    return asyncio.run(value) if inspect.iscoroutine(value) else value


def openai_args(fake: FakeLLMServer, model: str = "openai/gpt-4o") -> dict[str, Any]:
    return {"model": model, "api_base": fake.base_url("openai"), "api_key": "sk-fake", "messages": MESSAGES}


def anthropic_args(fake: FakeLLMServer) -> dict[str, Any]:
    return {"model": "anthropic/claude-haiku-4-5", "api_base": fake.base_url("anthropic"), "api_key": "sk-ant-fake",
            "messages": MESSAGES, "max_tokens": 64}


def complete(llm: Any, is_async: bool, **kwargs: Any) -> Any:
    return run(llm.acompletion(**kwargs) if is_async else llm.completion(**kwargs))


def read_stream(stream: Any, is_async: bool) -> list[Any]:
    if not is_async:
        return list(stream)

    async def drain() -> list[Any]:
        return [chunk async for chunk in stream]

    return asyncio.run(drain())


def open_and_read(llm: Any, is_async: bool, **kwargs: Any) -> tuple[Any, list[Any]]:
    """Open a stream and read it to its end (on one event loop for the async call)."""
    if not is_async:
        stream = llm.completion(stream=True, **kwargs)
        return stream, list(stream)

    async def both() -> tuple[Any, list[Any]]:
        stream = await llm.acompletion(stream=True, **kwargs)
        return stream, [chunk async for chunk in stream]

    return asyncio.run(both())


# -- completion ---------------------------------------------------------------------------------------


@SYNC_ASYNC
def test_completion_routed_to_openai(fake, tracker, ingest, customer, llm, is_async):
    resp = complete(llm, is_async, **openai_args(fake))
    assert type(resp) is litellm.ModelResponse
    event = only(tracker, ingest, customer)
    assert event["event_type"] == "TOKEN_USAGE"
    assert tokens(event) == CHAT_TOKENS
    assert event["provider"] == "openai"
    assert event["model"] == resp.model == reported_model("openai", "gpt-4o")
    assert event["metadata"]["response_id"] == resp.id
    assert event["metadata"]["cost"] == resp._hidden_params["response_cost"] > 0


@SYNC_ASYNC
def test_completion_routed_to_anthropic(fake, tracker, ingest, customer, llm, is_async):
    """LiteLLM's Anthropic answers do not name their provider in `_hidden_params`: resolved from the model."""
    resp = complete(llm, is_async, **anthropic_args(fake))
    assert type(resp) is litellm.ModelResponse
    event = only(tracker, ingest, customer)
    assert tokens(event) == CLAUDE_TOKENS
    assert event["provider"] == "anthropic"
    assert event["model"] == reported_model("anthropic", "claude-haiku-4-5")
    assert event["metadata"]["cache_creation_input_tokens"] == CLAUDE["cache_creation_input_tokens"]
    assert event["metadata"]["cost"] == resp._hidden_params["response_cost"] > 0


def test_completion_routed_to_gemini_is_recorded_as_google(fake, tracker, ingest, customer, llm):
    """LiteLLM's `gemini` is the API the native google-genai wrap records as `google`."""
    llm.completion(model="gemini/gemini-2.5-flash", api_base=fake.base_url("gemini") + "/v1beta", api_key="g-fake",
                   messages=MESSAGES)
    event = only(tracker, ingest, customer)
    assert event["provider"] == "google"
    assert tokens(event) == (GEMINI["promptTokenCount"], GEMINI["candidatesTokenCount"] + GEMINI["thoughtsTokenCount"],
                             GEMINI["cachedContentTokenCount"], GEMINI["thoughtsTokenCount"])


# -- streams ------------------------------------------------------------------------------------------


@SYNC_ASYNC
@pytest.mark.parametrize("asked", [False, True], ids=["usage_not_asked", "usage_asked"])
def test_stream_bills_once_and_hides_the_usage_chunk_unless_asked(fake, tracker, ingest, customer, llm, is_async,
                                                                   asked):
    kwargs = openai_args(fake)
    if asked:
        kwargs["stream_options"] = {"include_usage": True}
    stream, chunks = open_and_read(llm, is_async, **kwargs)
    assert isinstance(stream, CustomStreamWrapper)
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}  # the tracker asked
    assert "stream_options" not in kwargs or kwargs["stream_options"] == {"include_usage": True}
    with_usage = [chunk for chunk in chunks if getattr(chunk, "usage", None) is not None]
    assert len(with_usage) == (1 if asked else 0)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "".join(REPLY_CHUNKS)
    event = only(tracker, ingest, customer)
    assert tokens(event) == CHAT_TOKENS
    assert event["provider"] == "openai"
    assert event["model"] == reported_model("openai", "gpt-4o")
    assert "partial" not in event["metadata"]
    assert event["metadata"]["cost"] > 0


@SYNC_ASYNC
def test_anthropic_stream(fake, tracker, ingest, customer, llm, is_async):
    _, chunks = open_and_read(llm, is_async, **anthropic_args(fake))
    assert all(getattr(chunk, "usage", None) is None for chunk in chunks)
    event = only(tracker, ingest, customer)
    assert tokens(event) == CLAUDE_TOKENS
    assert event["provider"] == "anthropic"


def test_stream_left_early_is_billed_once_as_partial(fake, tracker, ingest, customer, llm):
    stream = llm.completion(stream=True, **openai_args(fake))
    for _ in stream:
        break
    stream.close()
    event = only(tracker, ingest, customer)
    assert event["metadata"]["partial"] is True
    assert event["metadata"]["stream_end"] == "closed"
    assert event["provider"] == "openai"


def test_usage_chunk_with_an_empty_choice_is_hidden_too():
    """LiteLLM's usage chunk has `choices=[{delta: {}}]` on some paths (#28735): found by its usage, hidden
    when it carries nothing else; a chunk with content or a finish reason beside its usage is passed on."""
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices, Usage

    from openmonetize.lib.llm.litellm import CompletionTally

    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    empty = ModelResponseStream(choices=[StreamingChoices(delta=Delta())], usage=usage)
    assert CompletionTally(True).observe(empty) is True
    assert CompletionTally(False).observe(empty) is False  # asked for: the caller sees it
    last = ModelResponseStream(choices=[StreamingChoices(delta=Delta(), finish_reason="stop")], usage=usage)
    tally = CompletionTally(True)
    assert tally.observe(last) is False
    assert tally.complete and tally.seen.usage is not None and tally.seen.usage.input_tokens == 3


# -- embeddings, images, audio --------------------------------------------------------------------------


@SYNC_ASYNC
def test_embedding(fake, tracker, ingest, customer, llm, is_async):
    kwargs = {"model": "openai/text-embedding-3-small", "api_base": fake.base_url("openai"), "api_key": "sk-fake",
              "input": ["one", "two"]}
    resp = run(llm.aembedding(**kwargs) if is_async else llm.embedding(**kwargs))
    assert type(resp) is litellm.EmbeddingResponse
    event = only(tracker, ingest, customer)
    assert (event["input_tokens"], event["output_tokens"]) == (USAGE["openai.embeddings"]["prompt_tokens"], 0)
    assert event["provider"] == "openai"
    assert event["model"] == "text-embedding-3-small"
    assert event["metadata"]["cost"] == resp._hidden_params["response_cost"] > 0


@SYNC_ASYNC
def test_image_generation(fake, tracker, ingest, customer, llm, is_async):
    kwargs = {"model": "openai/dall-e-3", "api_base": fake.base_url("openai"), "api_key": "sk-fake", "prompt": "a cat",
              "n": 2, "size": "1024x1024", "quality": "hd"}
    resp = run(llm.aimage_generation(**kwargs) if is_async else llm.image_generation(**kwargs))
    assert type(resp) is litellm.ImageResponse
    event = only(tracker, ingest, customer)
    assert event["event_type"] == "IMAGE_GENERATION"
    assert (event["image_count"], event["image_size"], event["quality"]) == (2, "1024x1024", "hd")
    assert (event["provider"], event["model"]) == ("openai", "dall-e-3")
    # LiteLLM gives the answer an all-zero usage: DALL-E reports no tokens, so none are kept
    assert "input_tokens" not in (event.get("metadata") or {})


@SYNC_ASYNC
def test_transcription_bills_audio_seconds(fake, tracker, ingest, customer, llm, is_async):
    audio = io.BytesIO(b"RIFF fake wav")
    audio.name = "hello.wav"
    kwargs = {"model": "openai/whisper-1", "api_base": fake.base_url("openai"), "api_key": "sk-fake", "file": audio}
    resp = run(llm.atranscription(**kwargs) if is_async else llm.transcription(**kwargs))
    assert type(resp) is litellm.TranscriptionResponse
    event = only(tracker, ingest, customer)
    assert event["event_type"] == "CUSTOM"
    assert (event["unit_type"], event["quantity"]) == ("audio_seconds",
                                                      USAGE["openai.transcriptions.duration"]["seconds"])
    assert (event["metadata"]["provider"], event["metadata"]["model"]) == ("openai", "whisper-1")


@SYNC_ASYNC
def test_speech_bills_input_characters(fake, tracker, ingest, customer, llm, is_async):
    kwargs = {"model": "openai/tts-1", "api_base": fake.base_url("openai"), "api_key": "sk-fake",
              "input": "Hello there!", "voice": "alloy"}
    resp = run(llm.aspeech(**kwargs) if is_async else llm.speech(**kwargs))
    assert resp.content == SPEECH_AUDIO
    event = only(tracker, ingest, customer)
    assert (event["event_type"], event["unit_type"], event["quantity"]) == ("CUSTOM", "characters", 12)
    assert (event["metadata"]["provider"], event["metadata"]["model"]) == ("openai", "tts-1")
    assert event["metadata"]["cost"] == resp._hidden_params["response_cost"] > 0


# -- errors ---------------------------------------------------------------------------------------------


@SYNC_ASYNC
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_provider_error_reaches_the_caller_and_bills_nothing(fake, tracker, ingest, customer, llm, is_async, stream):
    fake.fail_next(1, status=500)  # num_retries=0: else the openai client LiteLLM uses retries it
    with pytest.raises(litellm.InternalServerError):
        if stream:
            open_and_read(llm, is_async, num_retries=0, **openai_args(fake))
        else:
            complete(llm, is_async, num_retries=0, **openai_args(fake))
    assert recorded(tracker, ingest, customer) == []


def test_image_error_bills_nothing(fake, tracker, ingest, customer, llm):
    fake.fail_next(1, status=500)
    with pytest.raises(litellm.InternalServerError):
        llm.image_generation(model="openai/dall-e-3", api_base=fake.base_url("openai"), api_key="sk-fake",
                             prompt="a cat", max_retries=0)
    assert recorded(tracker, ingest, customer) == []


# -- the module proxy ---------------------------------------------------------------------------------


def test_the_wrapped_module_behaves_as_the_module(llm):
    assert isinstance(llm, types.ModuleType)
    assert llm.__name__ == "litellm"
    assert llm.get_llm_provider is litellm.get_llm_provider  # untracked attributes pass through
    assert llm.ModelResponse is litellm.ModelResponse
    setting = "drop_params"  # a lazily defined attribute of litellm, unknown to mypy
    before = getattr(litellm, setting)
    try:
        setattr(llm, setting, not before)  # settings go to the real module
        assert getattr(litellm, setting) is (not before)
    finally:
        setattr(litellm, setting, before)
    assert repr(llm) == repr(litellm)


def test_other_modules_are_refused(tracker, customer):
    with pytest.raises(TypeError, match=r"client=module json is not supported"):
        tracker.wrap(client=json, customer_id=customer)


def test_no_customer_is_reported_not_raised(fake, ingest):
    failures: list[Any] = []
    tracker = create_llm_tracker(api_key=API_KEY, base_url=ingest.url, flush_interval=0.02, on_error=failures.append)
    try:
        resp = tracker.wrap(client=litellm).completion(**openai_args(fake))
        assert type(resp) is litellm.ModelResponse
        assert tracker.flush(10)
        [failure] = failures
        assert failure.kind == "untracked"
        assert failure.events[0]["provider"] == "openai"
    finally:
        tracker.shutdown(5)


def test_importing_openmonetize_never_imports_litellm():
    code = ("import sys, openmonetize, openmonetize.lib.llm.litellm; "
            "from openmonetize import create_llm_tracker; assert 'litellm' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
