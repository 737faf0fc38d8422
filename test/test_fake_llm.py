"""The fake LLM server speaks each provider's wire format: the real SDKs parse every answer and see USAGE.

Usage trackers are tested against this server, so these tests pin what it promises: for
every endpoint, sync and async, plain and streamed, the SDK's own objects carry exactly the
documented numbers, in the places and with the stream semantics each provider uses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import anthropic
import groq
import httpx
import httpx2
import openai
import pytest
from anthropic.types import MessageParam
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from groq.types.chat import ChatCompletionMessageParam as GroqMessageParam
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from openmonetize.testing.fake_llm import (
    IMAGE_PNG,
    REPLY_CHUNKS,
    REPLY_TEXT,
    SPEECH_AUDIO,
    USAGE,
    FakeLLMServer,
    RecordedRequest,
    _example,
    reported_model,
)

KEY = "sk-fake-0123456789"
OPENAI_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
GROQ_MESSAGES: list[GroqMessageParam] = [{"role": "user", "content": "hi"}]
CLAUDE_MESSAGES: list[MessageParam] = [{"role": "user", "content": "hi"}]
GPT = "gpt-4o"
CLAUDE = "claude-haiku-4-5"
LLAMA = "llama-3.3-70b-versatile"
GEMINI = "gemini-2.5-flash"
CHAT_USAGE = {provider: USAGE[f"{provider}.chat"] for provider in ("openai", "openrouter", "groq")}
GEMINI_USAGE = USAGE["gemini.generateContent"]

T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


class Step(BaseModel):
    explanation: str
    output: int


class Answer(BaseModel):
    """What the parse helpers are asked for: nesting, lists, optionals, floats, bools."""

    steps: list[Step]
    final_answer: str
    confidence: float
    checked: bool
    note: str | None


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def fake(server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture(scope="module")
def oai(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=KEY, base_url=server.base_url("openai"), max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def openrouter(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=KEY, base_url=server.base_url("openrouter"), max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def groq_client(server: FakeLLMServer) -> Iterator[groq.Groq]:
    with groq.Groq(api_key=KEY, base_url=server.base_url("groq"), max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(server: FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=KEY, base_url=server.base_url("anthropic"), max_retries=0) as client:
        yield client


def gemini_client(server: FakeLLMServer) -> genai.Client:
    return genai.Client(api_key=KEY, http_options=genai_types.HttpOptions(base_url=server.base_url("gemini")))


@pytest.fixture(scope="module")
def gemini(server: FakeLLMServer) -> Iterator[genai.Client]:
    with gemini_client(server) as client:
        yield client


# ---------------------------------------------------------------------------- checks


def check_chat_usage(provider: str, usage: Any) -> None:
    """OpenAI-style usage as the openai/groq SDK types expose it."""
    expected = CHAT_USAGE[provider]
    assert usage is not None
    assert usage.prompt_tokens == expected["prompt_tokens"]
    assert usage.completion_tokens == expected["completion_tokens"]
    assert usage.total_tokens == expected["total_tokens"] == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == expected["cached_tokens"]
    assert usage.completion_tokens_details.reasoning_tokens == expected["reasoning_tokens"]
    if provider == "openrouter":
        assert usage.model_extra["cost"] == expected["cost"]
    if provider == "groq":
        assert (usage.queue_time, usage.prompt_time, usage.completion_time, usage.total_time) == (
            expected["queue_time"], expected["prompt_time"], expected["completion_time"], expected["total_time"])


def check_responses_usage(usage: Any) -> None:
    expected = USAGE["openai.responses"]
    assert usage is not None
    assert usage.input_tokens == expected["input_tokens"]
    assert usage.input_tokens_details.cached_tokens == expected["cached_tokens"]
    assert usage.input_tokens_details.cache_write_tokens == expected["cache_write_tokens"]
    assert usage.output_tokens == expected["output_tokens"]
    assert usage.output_tokens_details.reasoning_tokens == expected["reasoning_tokens"]
    assert usage.total_tokens == expected["total_tokens"] == usage.input_tokens + usage.output_tokens


def check_claude_usage(usage: Any) -> None:
    expected = USAGE["anthropic.messages"]
    assert usage.input_tokens == expected["input_tokens"]
    assert usage.cache_creation_input_tokens == expected["cache_creation_input_tokens"]
    assert usage.cache_read_input_tokens == expected["cache_read_input_tokens"]
    assert usage.output_tokens == expected["output_tokens"]


def check_gemini_usage(metadata: Any) -> None:
    assert metadata is not None
    assert metadata.prompt_token_count == GEMINI_USAGE["promptTokenCount"]
    assert metadata.cached_content_token_count == GEMINI_USAGE["cachedContentTokenCount"]
    assert metadata.candidates_token_count == GEMINI_USAGE["candidatesTokenCount"]
    assert metadata.thoughts_token_count == GEMINI_USAGE["thoughtsTokenCount"]
    assert metadata.total_token_count == GEMINI_USAGE["totalTokenCount"] == (
        metadata.prompt_token_count + metadata.candidates_token_count + metadata.thoughts_token_count)


def check_chat_chunks(provider: str, chunks: list[Any], *, usage_chunk: bool) -> None:
    """Three content chunks, a finish chunk, then (if asked for) the usage chunk with no choices."""
    content = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert content == list(REPLY_CHUNKS)
    assert len({chunk.id for chunk in chunks}) == 1
    if usage_chunk:
        *body, last = chunks
        assert last.choices == []
        check_chat_usage(provider, last.usage)
        assert all(chunk.usage is None for chunk in body)
        assert "usage" in body[0].model_fields_set  # sent as an explicit null, as OpenAI does
    else:
        last = chunks[-1]
        assert all(chunk.usage is None for chunk in chunks)
    finish = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert [chunk.choices[0].finish_reason for chunk in finish] == ["stop"]


# ---------------------------------------------------------------------------- OpenAI / OpenRouter chat


@pytest.mark.parametrize("provider", ["openai", "openrouter"])
def test_chat_completion_usage_model_and_id(fake, oai, openrouter, provider):
    client = oai if provider == "openai" else openrouter
    model = GPT if provider == "openai" else "openai/gpt-4o"
    first = client.chat.completions.create(model=model, messages=OPENAI_MESSAGES)
    second = client.chat.completions.create(model=model, messages=OPENAI_MESSAGES)
    check_chat_usage(provider, first.usage)
    assert first.choices[0].message.content == REPLY_TEXT
    assert first.choices[0].finish_reason == "stop"
    assert first.model == reported_model(provider, model)
    assert first.id != second.id
    if provider == "openai":
        assert first.model == "gpt-4o-2024-08-06"
        assert first.id.startswith("chatcmpl-")
        assert first._request_id and first._request_id != second._request_id  # from the x-request-id header
    else:
        assert first.model == "openai/gpt-4o"
        assert first.id.startswith("gen-")
        assert first.model_extra is not None and first.model_extra["provider"] == "OpenAI"


@pytest.mark.parametrize("provider", ["openai", "openrouter"])
def test_chat_stream_reports_usage_only_when_asked(fake, oai, openrouter, provider):
    client = oai if provider == "openai" else openrouter
    asked = list(client.chat.completions.create(
        model=GPT, messages=OPENAI_MESSAGES, stream=True, stream_options={"include_usage": True}))
    check_chat_chunks(provider, asked, usage_chunk=True)
    assert asked[0].model == reported_model(provider, GPT)
    silent = list(client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES, stream=True))
    check_chat_chunks(provider, silent, usage_chunk=False)


def test_openrouter_usage_include_flag_also_asks_for_usage(fake, openrouter):
    chunks = list(openrouter.chat.completions.create(
        model="anthropic/claude-haiku-4.5", messages=OPENAI_MESSAGES, stream=True,
        extra_body={"usage": {"include": True}}))
    check_chat_chunks("openrouter", chunks, usage_chunk=True)
    assert chunks[0].model_extra is not None and chunks[0].model_extra["provider"] == "Anthropic"


@pytest.mark.parametrize("provider", ["openai", "openrouter"])
def test_chat_async(fake, provider):
    async def main() -> None:
        async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url(provider), max_retries=0) as client:
            reply = await client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)
            check_chat_usage(provider, reply.usage)
            stream = await client.chat.completions.create(
                model=GPT, messages=OPENAI_MESSAGES, stream=True, stream_options={"include_usage": True})
            check_chat_chunks(provider, [chunk async for chunk in stream], usage_chunk=True)

    run(main)


def test_chat_parse_with_pydantic_response_format(fake, oai):
    completion = oai.chat.completions.parse(model=GPT, messages=OPENAI_MESSAGES, response_format=Answer)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer)
    assert parsed.steps and isinstance(parsed.steps[0], Step)
    check_chat_usage("openai", completion.usage)
    assert fake.requests[-1].json["response_format"]["type"] == "json_schema"


def test_chat_stream_helper_parses_and_keeps_usage(fake, oai):
    with oai.chat.completions.stream(
        model=GPT, messages=OPENAI_MESSAGES, response_format=Answer, stream_options={"include_usage": True}
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        completion = stream.get_final_completion()
    assert len(deltas) == 3
    assert isinstance(completion.choices[0].message.parsed, Answer)
    check_chat_usage("openai", completion.usage)


def test_chat_stream_helper_async(fake):
    async def main() -> None:
        async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0) as client:
            parsed = await client.chat.completions.parse(model=GPT, messages=OPENAI_MESSAGES, response_format=Answer)
            assert isinstance(parsed.choices[0].message.parsed, Answer)
            async with client.chat.completions.stream(
                model=GPT, messages=OPENAI_MESSAGES, stream_options={"include_usage": True}
            ) as stream:
                async for _ in stream:
                    pass
                completion = await stream.get_final_completion()
            assert completion.choices[0].message.content == REPLY_TEXT
            check_chat_usage("openai", completion.usage)

    run(main)


# ---------------------------------------------------------------------------- Groq


def test_groq_chat_usage(fake, groq_client):
    reply = groq_client.chat.completions.create(model=LLAMA, messages=GROQ_MESSAGES)
    check_chat_usage("groq", reply.usage)
    assert reply.choices[0].message.content == REPLY_TEXT
    assert reply.model == LLAMA
    assert reply.x_groq is not None and reply.x_groq.id.startswith("req_")
    assert fake.requests[-1].path == "/groq/openai/v1/chat/completions"


def check_groq_chunks(chunks: list[Any]) -> None:
    """Groq's shape: usage in the final chunk's x_groq, never OpenAI's usage chunk."""
    assert [chunk.choices[0].delta.content for chunk in chunks[:3]] == list(REPLY_CHUNKS)
    *body, last = chunks
    assert last.choices[0].finish_reason == "stop"
    assert last.x_groq is not None
    check_chat_usage("groq", last.x_groq.usage)
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.x_groq is None or chunk.x_groq.usage is None for chunk in body)


def test_groq_stream_puts_usage_in_x_groq(fake, groq_client):
    chunks = list(groq_client.chat.completions.create(model=LLAMA, messages=GROQ_MESSAGES, stream=True))
    check_groq_chunks(chunks)
    # stream_options (which the groq SDK has no parameter for) does not change where Groq reports usage
    chunks = list(groq_client.chat.completions.create(
        model=LLAMA, messages=GROQ_MESSAGES, stream=True, extra_body={"stream_options": {"include_usage": True}}))
    check_groq_chunks(chunks)


def test_groq_async(fake):
    async def main() -> None:
        async with groq.AsyncGroq(api_key=KEY, base_url=fake.base_url("groq"), max_retries=0) as client:
            reply = await client.chat.completions.create(model=LLAMA, messages=GROQ_MESSAGES)
            check_chat_usage("groq", reply.usage)
            stream = await client.chat.completions.create(model=LLAMA, messages=GROQ_MESSAGES, stream=True)
            check_groq_chunks([chunk async for chunk in stream])

    run(main)


# ---------------------------------------------------------------------------- OpenAI responses


def test_responses_usage(fake, oai):
    first = oai.responses.create(model=GPT, input="hi")
    second = oai.responses.create(model=GPT, input="hi")
    check_responses_usage(first.usage)
    assert first.output_text == REPLY_TEXT
    assert first.model == "gpt-4o-2024-08-06"
    assert first.id.startswith("resp_") and first.id != second.id


EVENT_SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def check_response_events(events: list[Any]) -> None:
    assert [event.type for event in events] == EVENT_SEQUENCE
    assert [event.sequence_number for event in events] == list(range(len(EVENT_SEQUENCE)))
    assert [event.delta for event in events if event.type == "response.output_text.delta"] == list(REPLY_CHUNKS)
    assert events[0].response.usage is None
    completed = events[-1].response
    check_responses_usage(completed.usage)
    assert completed.output_text == REPLY_TEXT
    assert completed.id == events[0].response.id


def test_responses_stream_event_sequence(fake, oai):
    check_response_events(list(oai.responses.create(model=GPT, input="hi", stream=True)))


def test_responses_stream_helper_and_parse(fake, oai):
    with oai.responses.stream(model=GPT, input="hi") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    check_responses_usage(final.usage)
    assert final.output_text == REPLY_TEXT
    parsed = oai.responses.parse(model=GPT, input="hi", text_format=Answer)
    assert isinstance(parsed.output_parsed, Answer)


def test_responses_async(fake):
    async def main() -> None:
        async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0) as client:
            check_responses_usage((await client.responses.create(model=GPT, input="hi")).usage)
            stream = await client.responses.create(model=GPT, input="hi", stream=True)
            check_response_events([event async for event in stream])

    run(main)


# ---------------------------------------------------------------------------- embeddings


def expected_vector(index: int, size: int = 8) -> list[float]:
    return [((index + 1) * (j + 1) % 64) / 64 for j in range(size)]


@pytest.mark.parametrize("provider", ["openai", "openrouter"])
def test_embeddings_base64_default_and_float(fake, oai, openrouter, provider):
    client = oai if provider == "openai" else openrouter
    expected = USAGE[f"{provider}.embeddings"]
    reply = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert fake.requests[-1].json["encoding_format"] == "base64"  # what the SDK asks for by default
    assert [item.embedding for item in reply.data] == [expected_vector(0), expected_vector(1)]
    assert reply.usage.prompt_tokens == expected["prompt_tokens"]
    assert reply.usage.total_tokens == expected["total_tokens"]
    assert reply.model == "text-embedding-3-small"
    if provider == "openrouter":
        assert reply.usage.model_extra is not None and reply.usage.model_extra["cost"] == expected["cost"]
    plain = client.embeddings.create(model="text-embedding-3-small", input="one", encoding_format="float", dimensions=3)
    assert [item.embedding for item in plain.data] == [expected_vector(0, 3)]


def test_embeddings_raw_base64_is_float32(fake, oai):
    reply = oai.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]], encoding_format="base64")
    raw = base64.b64decode(str(reply.data[0].embedding))
    assert list(struct.unpack("<8f", raw)) == expected_vector(0)


def test_embeddings_async(fake):
    async def main() -> None:
        async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0) as client:
            reply = await client.embeddings.create(model="text-embedding-3-large", input="one")
            assert reply.data[0].embedding == expected_vector(0)
            assert reply.usage.prompt_tokens == USAGE["openai.embeddings"]["prompt_tokens"]

    run(main)


# ---------------------------------------------------------------------------- OpenAI images and audio

PNG = ("cat.png", IMAGE_PNG, "image/png")
WAV = ("hello.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav")


def test_images_gpt_image_usage_and_dall_e_shapes(fake, oai):
    reply = oai.images.generate(model="gpt-image-1", prompt="a cat", n=2, quality="high")
    assert [base64.b64decode(str(item.b64_json)) for item in reply.data] == [IMAGE_PNG, IMAGE_PNG]
    assert (reply.size, reply.quality, reply.output_format) == ("1024x1024", "high", "png")
    images = USAGE["openai.images"]
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (images["input_tokens"], images["output_tokens"])
    assert reply.usage.input_tokens_details.image_tokens == images["input_image_tokens"]
    dall_e = oai.images.generate(model="dall-e-3", prompt="a cat", size="1792x1024", quality="hd")
    assert (dall_e.size, dall_e.quality, dall_e.usage) == (None, None, None)  # DALL-E 3 echoes neither
    assert dall_e.data is not None and dall_e.data[0].url and dall_e.data[0].revised_prompt == "a cat"
    assert fake.requests[-1].json["size"] == "1792x1024"  # a JSON body


def test_image_edits_are_multipart_uploads_and_stream(fake, oai):
    reply = oai.images.edit(model="gpt-image-1", image=[PNG, PNG], prompt="a hat", n=3)
    assert reply.data is not None and len(reply.data) == 3
    form = fake.requests[-1].json
    assert form == {"model": "gpt-image-1", "prompt": "a hat", "n": "3",
                    "image": [{"filename": "cat.png", "size": len(IMAGE_PNG)}] * 2}
    with pytest.warns(DeprecationWarning):
        variation = oai.images.create_variation(image=PNG)
    assert variation.data is not None and len(variation.data) == 1 and variation.usage is None  # dall-e-2
    events = list(oai.images.edit(model="gpt-image-1", image=PNG, prompt="a hat", stream=True, partial_images=1))
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]


def test_transcription_formats_and_usage_kinds(fake, oai):
    whisper = oai.audio.transcriptions.create(model="whisper-1", file=WAV)
    assert whisper.usage is not None and whisper.usage.type == "duration"
    assert whisper.usage.seconds == USAGE["openai.transcriptions.duration"]["seconds"]
    tokens = oai.audio.transcriptions.create(model="gpt-4o-transcribe", file=WAV)
    assert tokens.usage is not None and tokens.usage.type == "tokens"
    assert tokens.usage.input_tokens == USAGE["openai.transcriptions.tokens"]["input_tokens"]
    assert oai.audio.transcriptions.create(model="whisper-1", file=WAV, response_format="text") == REPLY_TEXT + "\n"
    vtt = oai.audio.transcriptions.create(model="whisper-1", file=WAV, response_format="vtt")
    assert vtt.startswith("WEBVTT") and "00:00:41.500" in vtt
    assert fake.requests[-1].json["file"] == {"filename": "hello.wav", "size": len(WAV[1])}
    stream = list(oai.audio.transcriptions.create(model="gpt-4o-transcribe", file=WAV, stream=True))
    assert [e.type for e in stream] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
    with pytest.raises(openai.BadRequestError, match="not supported with whisper-1"):
        oai.audio.transcriptions.create(model="whisper-1", file=WAV, stream=True)
    with pytest.warns(DeprecationWarning):
        verbose = oai.audio.translations.create(model="whisper-1", file=WAV, response_format="verbose_json")
    assert verbose.duration == USAGE["openai.translations"]["duration"]


def test_speech_answers_audio_bytes(fake, oai):
    audio = oai.audio.speech.create(model="tts-1", voice="alloy", input="Hello", response_format="wav")
    assert audio.content == SPEECH_AUDIO
    assert audio.response.headers["content-type"] == "audio/wav"
    with oai.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="Hi") as response:
        assert b"".join(response.iter_bytes()) == SPEECH_AUDIO


@pytest.mark.filterwarnings("ignore:The generate_images method is deprecated")
def test_vertex_imagen_predict(fake):
    client = genai.Client(vertexai=True, api_key=KEY,
                          http_options=genai_types.HttpOptions(base_url=fake.base_url("vertex")))
    reply = client.models.generate_images(model="imagen-4.0-generate-001", prompt="a cat",
                                          config=genai_types.GenerateImagesConfig(number_of_images=3))
    assert reply.generated_images is not None and len(reply.generated_images) == 3
    image = reply.generated_images[0].image
    assert image is not None and image.image_bytes == IMAGE_PNG and image.mime_type == "image/png"
    [request] = fake.requests
    assert request.provider == "vertex"
    assert request.path == "/vertex/v1beta1/publishers/google/models/imagen-4.0-generate-001:predict"
    assert request.json["parameters"]["sampleCount"] == 3
    fake.fail_next(1, status=400)
    with pytest.raises(genai_errors.ClientError, match="INVALID_ARGUMENT"):
        client.models.generate_images(model="imagen-4.0-generate-001", prompt="a cat")


def test_responses_built_in_tools_answer_their_calls(fake, oai):
    reply = oai.responses.create(model=GPT, input="hi", tools=[{"type": "web_search_preview"},
                                                               {"type": "file_search", "vector_store_ids": ["vs"]}])
    tools = USAGE["openai.responses.tools"]
    kinds = [item.type for item in reply.output]
    assert kinds == ["web_search_call"] * int(tools["web_search_call"]) + \
        ["file_search_call"] * int(tools["file_search_call"]) + ["message"]
    assert reply.output_text == REPLY_TEXT


# ---------------------------------------------------------------------------- Anthropic


def test_anthropic_message_usage(fake, claude):
    first = claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES)
    second = claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES)
    check_claude_usage(first.usage)
    assert [block.type for block in first.content] == ["text"]
    assert first.content[0].type == "text" and first.content[0].text == REPLY_TEXT
    assert first.stop_reason == "end_turn"
    assert first.model == "claude-haiku-4-5-20251001" == reported_model("anthropic", CLAUDE)
    assert first.id.startswith("msg_") and first.id != second.id
    assert first._request_id and first._request_id != second._request_id  # from the request-id header


def check_claude_events(events: list[Any]) -> None:
    """message_start has a preliminary output count of 1; message_delta the cumulative final one."""
    assert [event.type for event in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]  # the ping is not surfaced
    start, delta = events[0], events[-2]
    expected = USAGE["anthropic.messages"]
    assert start.message.usage.output_tokens == 1
    assert start.message.usage.input_tokens == expected["input_tokens"]
    assert delta.usage.output_tokens == expected["output_tokens"]
    assert start.message.usage.output_tokens + delta.usage.output_tokens != expected["output_tokens"]
    assert delta.delta.stop_reason == "end_turn"
    assert [event.delta.text for event in events if event.type == "content_block_delta"] == list(REPLY_CHUNKS)


def test_anthropic_stream_message_delta_is_cumulative(fake, claude):
    check_claude_events(list(claude.messages.create(
        model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES, stream=True)))
    assert fake.requests[-1].json["stream"] is True


def test_anthropic_stream_helper_final_message(fake, claude):
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES) as stream:
        assert "".join(stream.text_stream) == REPLY_TEXT
        final = stream.get_final_message()
    check_claude_usage(final.usage)
    parsed = claude.messages.parse(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES, output_format=Answer)
    assert isinstance(parsed.parsed_output, Answer)


def test_anthropic_async(fake):
    async def main() -> None:
        async with anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.base_url("anthropic"), max_retries=0) as client:
            check_claude_usage((await client.messages.create(
                model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES)).usage)
            stream = await client.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES, stream=True)
            check_claude_events([event async for event in stream])
            async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES) as helper:
                final = await helper.get_final_message()
            check_claude_usage(final.usage)

    run(main)


# ---------------------------------------------------------------------------- Gemini


def test_gemini_usage(fake, gemini):
    first = gemini.models.generate_content(model=GEMINI, contents="hi")
    second = gemini.models.generate_content(model=GEMINI, contents="hi")
    check_gemini_usage(first.usage_metadata)
    assert first.text == REPLY_TEXT
    assert first.model_version == GEMINI
    assert first.response_id and first.response_id != second.response_id
    recorded = fake.requests[-1]
    assert (recorded.provider, recorded.query) == ("gemini", "")
    assert recorded.path == f"/gemini/v1/models/{GEMINI}:generateContent"  # google-genai 3.x uses v1


def check_gemini_chunks(chunks: list[Any]) -> None:
    """Running totals: the last chunk holds the final numbers, so summing chunks overcounts."""
    assert [chunk.text for chunk in chunks] == list(REPLY_CHUNKS)
    counts = [chunk.usage_metadata.candidates_token_count for chunk in chunks]
    assert counts == sorted(counts) and len(set(counts)) == 3
    assert all(chunk.usage_metadata.prompt_token_count == GEMINI_USAGE["promptTokenCount"] for chunk in chunks)
    check_gemini_usage(chunks[-1].usage_metadata)
    assert sum(counts) > GEMINI_USAGE["candidatesTokenCount"]
    assert len({chunk.response_id for chunk in chunks}) == 1


def test_gemini_stream_running_totals(fake, gemini):
    check_gemini_chunks(list(gemini.models.generate_content_stream(model=GEMINI, contents="hi")))
    assert fake.requests[-1].query == "alt=sse"
    assert fake.requests[-1].path.endswith(f"/models/{GEMINI}:streamGenerateContent")


def test_gemini_json_schema_output(fake, gemini):
    config = genai_types.GenerateContentConfig(response_mime_type="application/json", response_schema=Answer)
    reply = gemini.models.generate_content(model=GEMINI, contents="hi", config=config)
    assert isinstance(reply.parsed, Answer)


def test_gemini_async(fake):
    async def main() -> None:
        async with gemini_client(fake).aio as client:
            check_gemini_usage((await client.models.generate_content(model=GEMINI, contents="hi")).usage_metadata)
            stream = await client.models.generate_content_stream(model=GEMINI, contents="hi")
            check_gemini_chunks([chunk async for chunk in stream])

    run(main)


# ---------------------------------------------------------------------------- faults

SYNC_CALLS: dict[str, Callable[[Any], Any]] = {
    "openai": lambda c: c["openai"].chat.completions.create(model=GPT, messages=OPENAI_MESSAGES),
    "openrouter": lambda c: c["openrouter"].chat.completions.create(model=GPT, messages=OPENAI_MESSAGES),
    "groq": lambda c: c["groq"].chat.completions.create(model=LLAMA, messages=GROQ_MESSAGES),
    "anthropic": lambda c: c["anthropic"].messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES),
    "gemini": lambda c: c["gemini"].models.generate_content(model=GEMINI, contents="hi"),
}
SERVER_ERRORS: dict[str, type[Exception]] = {
    "openai": openai.InternalServerError,
    "openrouter": openai.InternalServerError,
    "groq": groq.InternalServerError,
    "anthropic": anthropic.InternalServerError,
    "gemini": genai_errors.ServerError,
}


@pytest.fixture
def clients(oai, openrouter, groq_client, claude, gemini) -> dict[str, Any]:
    return {"openai": oai, "openrouter": openrouter, "groq": groq_client, "anthropic": claude, "gemini": gemini}


@pytest.mark.parametrize("provider", sorted(SYNC_CALLS))
def test_fail_next_raises_the_sdks_own_error(fake, clients, provider):
    fake.fail_next(n=2, status=500)
    for _ in range(2):
        with pytest.raises(SERVER_ERRORS[provider]) as raised:
            SYNC_CALLS[provider](clients)
        assert "fail_next" in str(raised.value)
    SYNC_CALLS[provider](clients)  # the faults are used up
    assert len(fake.requests) == 3  # with max_retries=0 every call is one request


def test_fail_next_status_and_error_shapes(fake, oai, claude, gemini):
    fake.fail_next(status=429)
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)
    fake.fail_next(status=503)
    with pytest.raises(anthropic.APIStatusError) as claude_error:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES)
    assert claude_error.value.status_code == 503
    assert claude_error.value.body["type"] == "error"  # type: ignore[index]
    fake.fail_next(status=500)
    with pytest.raises(genai_errors.ServerError) as gemini_error:
        gemini.models.generate_content(model=GEMINI, contents="hi")
    assert (gemini_error.value.code, gemini_error.value.status) == (500, "INTERNAL")


def test_fail_next_async(fake):
    async def main() -> None:
        async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0) as client:
            fake.fail_next()
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)
        async with anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.base_url("anthropic"), max_retries=0) as claude:
            fake.fail_next()
            with pytest.raises(anthropic.InternalServerError):
                await claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES, stream=True)
        async with groq.AsyncGroq(api_key=KEY, base_url=fake.base_url("groq"), max_retries=0) as groq_client:
            fake.fail_next()
            with pytest.raises(groq.InternalServerError):
                await groq_client.chat.completions.create(model=LLAMA, messages=GROQ_MESSAGES)
        async with gemini_client(fake).aio as gemini:
            fake.fail_next()
            with pytest.raises(genai_errors.ServerError):  # the request is sent on first iteration
                async for _ in await gemini.models.generate_content_stream(model=GEMINI, contents="hi"):
                    pass

    run(main)


def test_sdk_retries_consume_queued_failures(fake):
    with openai.OpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=1) as client:
        fake.fail_next(n=1)
        reply = client.with_options(timeout=5).chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)
    check_chat_usage("openai", reply.usage)
    assert len(fake.requests) == 2


STREAM_CALLS: dict[str, Callable[[Any], Any]] = {
    "openai": lambda c: c["openai"].chat.completions.create(
        model=GPT, messages=OPENAI_MESSAGES, stream=True, stream_options={"include_usage": True}),
    "openai.responses": lambda c: c["openai"].responses.create(model=GPT, input="hi", stream=True),
    "openrouter": lambda c: c["openrouter"].chat.completions.create(model=GPT, messages=OPENAI_MESSAGES, stream=True),
    "groq": lambda c: c["groq"].chat.completions.create(model=LLAMA, messages=GROQ_MESSAGES, stream=True),
    "anthropic": lambda c: c["anthropic"].messages.create(
        model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES, stream=True),
    "gemini": lambda c: c["gemini"].models.generate_content_stream(model=GEMINI, contents="hi"),
}


# What a cut stream raises: openai wraps the transport error, the others let httpx's through.
CUT_ERRORS: dict[str, type[Exception]] = {
    "openai": openai.APIConnectionError,
    "openai.responses": openai.APIConnectionError,
    "openrouter": openai.APIConnectionError,
    "groq": httpx.RemoteProtocolError,  # the groq SDK still uses httpx
    "anthropic": httpx2.RemoteProtocolError,
    "gemini": httpx2.RemoteProtocolError,
}


def content_of(item: Any) -> str | None:
    """The text a streamed item adds, whatever the SDK's shape."""
    if isinstance(item, genai_types.GenerateContentResponse):
        return item.text
    kind = getattr(item, "type", None)
    if kind == "response.output_text.delta":
        return str(item.delta)
    if kind == "content_block_delta":
        return str(item.delta.text)
    if kind is None and item.choices:  # a chat completion chunk
        return item.choices[0].delta.content  # type: ignore[no-any-return]
    return None


@pytest.mark.parametrize("name", sorted(STREAM_CALLS))
def test_cut_next_stream_raises_after_one_chunk(fake, clients, name):
    fake.cut_next_stream(after_chunks=1)
    seen: list[str] = []
    with pytest.raises(CUT_ERRORS[name]):
        for item in STREAM_CALLS[name](clients):
            text = content_of(item)
            if text:
                seen.append(text)
    assert seen == [REPLY_CHUNKS[0]]
    # the next stream is whole again
    assert [t for t in map(content_of, STREAM_CALLS[name](clients)) if t] == list(REPLY_CHUNKS)


def test_cut_before_any_content_sends_only_the_preamble(fake, claude, gemini):
    fake.cut_next_stream(after_chunks=0)
    events = []
    with pytest.raises(httpx2.RemoteProtocolError):
        for event in claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES, stream=True):
            events.append(event.type)
    assert events == ["message_start", "content_block_start"]
    fake.cut_next_stream(after_chunks=0)
    with pytest.raises(httpx2.RemoteProtocolError):
        list(gemini.models.generate_content_stream(model=GEMINI, contents="hi"))
    assert len(fake.requests) == 2  # google-genai has no continuation token to resume from
    with pytest.raises(ValueError):
        fake.cut_next_stream(after_chunks=4)


try:
    import aiohttp

    GENAI_ASYNC_CUT: tuple[type[Exception], ...] = (httpx2.RemoteProtocolError, aiohttp.ClientPayloadError)
except ImportError:
    GENAI_ASYNC_CUT = (httpx2.RemoteProtocolError,)


def test_cut_next_stream_async(fake):
    async def main() -> None:
        async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0) as client:
            fake.cut_next_stream(after_chunks=2)
            seen = []
            with pytest.raises(openai.APIConnectionError):
                async for chunk in await client.chat.completions.create(
                        model=GPT, messages=OPENAI_MESSAGES, stream=True, stream_options={"include_usage": True}):
                    seen.append(chunk)
            assert [chunk.choices[0].delta.content for chunk in seen] == list(REPLY_CHUNKS[:2])
        async with anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.base_url("anthropic"), max_retries=0) as claude:
            fake.cut_next_stream()
            events = []
            with pytest.raises(httpx2.RemoteProtocolError, match="incomplete"):
                async for event in await claude.messages.create(
                        model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES, stream=True):
                    events.append(event.type)
            assert events == ["message_start", "content_block_start", "content_block_delta"]
        async with groq.AsyncGroq(api_key=KEY, base_url=fake.base_url("groq"), max_retries=0) as groq_client:
            fake.cut_next_stream()
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
                async for _ in await groq_client.chat.completions.create(
                        model=LLAMA, messages=GROQ_MESSAGES, stream=True):
                    pass
        async with gemini_client(fake).aio as gemini:
            fake.cut_next_stream()
            texts = []
            # google-genai's async client uses aiohttp when it is installed (litellm brings it), else httpx2
            with pytest.raises(GENAI_ASYNC_CUT, match=r"incomplete|not completed"):
                async for item in await gemini.models.generate_content_stream(model=GEMINI, contents="hi"):
                    texts.append(item.text)
            assert texts == [REPLY_CHUNKS[0]]

    run(main)


def test_cut_waits_for_a_stream_and_reset_clears_faults(fake, oai):
    fake.cut_next_stream()
    check_chat_usage("openai", oai.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES).usage)
    with pytest.raises(openai.APIConnectionError):
        list(oai.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES, stream=True))
    fake.fail_next(n=3)
    fake.cut_next_stream()
    fake.reset()
    assert fake.requests == []
    assert len(list(oai.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES, stream=True))) == 4


def test_breaking_out_of_a_stream_leaves_the_server_serving(fake, oai, claude):
    for chunk in oai.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES, stream=True):
        assert chunk.choices[0].delta.content == REPLY_CHUNKS[0]
        break
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES) as stream:
        next(iter(stream.text_stream))
    check_chat_usage("openai", oai.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES).usage)


# ---------------------------------------------------------------------------- the server itself


def test_requests_are_recorded_without_headers(fake, oai, claude):
    oai.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES, user="u-1")
    claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MESSAGES)
    first, second = fake.requests
    assert first == RecordedRequest(
        "openai", "/openai/v1/chat/completions", "", {"model": GPT, "messages": OPENAI_MESSAGES, "user": "u-1"})
    assert (second.provider, second.path, second.json["max_tokens"]) == ("anthropic", "/anthropic/v1/messages", 64)
    assert KEY not in repr(fake.requests)


def test_base_urls_and_unknown_routes(fake, oai):
    assert fake.base_url("openai") == f"{fake.url}/openai/v1"
    assert fake.base_url("openrouter") == f"{fake.url}/openrouter/api/v1"
    assert fake.base_url("groq") == f"{fake.url}/groq"
    assert fake.url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="unknown provider"):
        fake.base_url("mistral")
    with pytest.raises(openai.NotFoundError):
        oai.models.list()
    assert fake.requests == []  # only provider endpoints are recorded


def test_missing_required_fields_answer_400(fake):
    with openai.OpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0) as client, \
            pytest.raises(openai.BadRequestError, match="input"):
        client.post("/embeddings", body={"model": "text-embedding-3-small"}, cast_to=object)


def test_reported_model_rule():
    assert reported_model("openai", "gpt-4o") == "gpt-4o-2024-08-06"
    assert reported_model("openai", "gpt-4o-2024-05-13") == "gpt-4o-2024-05-13"
    assert reported_model("anthropic", "claude-haiku-4-5") == "claude-haiku-4-5-20251001"
    assert reported_model("anthropic", "claude-haiku-4-5-20251001") == "claude-haiku-4-5-20251001"
    for provider in ("openrouter", "groq", "gemini"):
        assert reported_model(provider, "some-model") == "some-model"


def test_usage_numbers_are_distinct_and_consistent():
    for name, numbers in USAGE.items():
        tokens = [value for key, value in numbers.items() if key != "total_tokens" and isinstance(value, int)]
        if "embeddings" not in name:
            assert len(set(tokens)) == len(tokens), name
    for provider in ("openai", "openrouter", "groq"):
        n = USAGE[f"{provider}.chat"]
        assert n["total_tokens"] == n["prompt_tokens"] + n["completion_tokens"]
        assert n["cached_tokens"] < n["prompt_tokens"] and n["reasoning_tokens"] < n["completion_tokens"]
    g = GEMINI_USAGE
    assert g["totalTokenCount"] == g["promptTokenCount"] + g["candidatesTokenCount"] + g["thoughtsTokenCount"]
    i = USAGE["openai.images"]
    assert i["input_tokens"] == i["input_text_tokens"] + i["input_image_tokens"]
    assert i["output_tokens"] == i["output_text_tokens"] + i["output_image_tokens"]
    assert i["total_tokens"] == i["input_tokens"] + i["output_tokens"]
    t = USAGE["openai.transcriptions.tokens"]
    assert t["input_tokens"] == t["audio_tokens"] + t["text_tokens"]
    assert t["total_tokens"] == t["input_tokens"] + t["output_tokens"]


def test_schema_examples_validate():
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"name": {"type": "string"},
                                                             "child": {"anyOf": [{"$ref": "#/$defs/Node"},
                                                                                 {"type": "null"}]}},
                           "required": ["name", "child"]}},
        "type": "object",
        "properties": {
            "root": {"$ref": "#/$defs/Node"},
            "kind": {"enum": ["a", "b"]},
            "fixed": {"const": 3},
            "when": {"type": "string", "format": "date-time"},
            "count": {"type": "integer", "minimum": 10},
            "ratio": {"type": "number", "maximum": 1},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}]},
            "tags": {"type": ["array", "null"], "items": {"type": "string", "minLength": 6}},
        },
        "required": ["root", "kind", "fixed", "when", "count", "ratio", "pair", "tags"],
    }
    value = _example(schema, schema)
    assert value["kind"] == "a" and value["fixed"] == 3 and value["count"] == 10 and value["ratio"] == 1
    assert value["pair"] == [7, True] and value["tags"] == ["fakexx"]
    depth, node = 0, value["root"]
    while node is not None:  # a recursive schema ends
        depth, node = depth + 1, node["child"]
    assert 1 <= depth <= 6
    json.dumps(value)
    gemini_style = {"type": "OBJECT",
                    "properties": {"n": {"type": "INTEGER"}, "s": {"type": "STRING", "nullable": True}}}
    assert _example(gemini_style, gemini_style) == {"n": 7, "s": "fake"}


def test_start_stop_and_restart():
    fake = FakeLLMServer()
    with pytest.raises(RuntimeError):
        fake.url  # noqa: B018 - no port before start
    assert fake.start() is fake.start()
    url = fake.url
    with openai.OpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0) as client:
        client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)  # leaves a keep-alive connection open
        fake.stop()
        fake.stop()
        assert not fake.running
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)
    fake.start()
    try:
        assert fake.url == url  # the port is kept
    finally:
        fake.stop()
