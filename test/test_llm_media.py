"""The LLM tracker on every billed modality beyond chat: OpenAI images and audio, Imagen on Vertex, the
Responses built-in tools, and the token kinds without a field of their own. The real SDKs against the fake
provider server, events delivered to a real LocalIngestServer (fixtures shared with test_llm.py)."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import test_llm
from conftest import ROOT
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from test_llm import CLAUDE, RESPONSES_TOKENS, SYNC_ASYNC, anthropic_client, only, openai_client, recorded, run, tokens

from openmonetize.lib.llm import usage as u
from openmonetize.testing.fake_llm import IMAGE_PNG, SPEECH_AUDIO, USAGE, FakeLLMServer

# test_llm's fixtures: a fake provider server, an ingest server and a tracker per module, a customer per test
fake, ingest, tracker, customer = test_llm.fake, test_llm.ingest, test_llm.tracker, test_llm.customer

IMAGES = USAGE["openai.images"]
WHISPER = USAGE["openai.transcriptions.duration"]
TRANSCRIBE = USAGE["openai.transcriptions.tokens"]
TOOLS = USAGE["openai.responses.tools"]
AUDIO = ("speech.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav")
PNG = ("cat.png", IMAGE_PNG, "image/png")
IMAGEN = "imagen-4.0-generate-001"
IMAGE_TOKENS_METADATA = {
    "input_tokens": IMAGES["input_tokens"], "output_tokens": IMAGES["output_tokens"],
    "input_text_tokens": IMAGES["input_text_tokens"], "input_image_tokens": IMAGES["input_image_tokens"],
    "output_text_tokens": IMAGES["output_text_tokens"], "output_image_tokens": IMAGES["output_image_tokens"],
}
# images.create_variation and audio.translations are deprecated in the openai SDK; Imagen's generate_images
# in google-genai: the calls still run and are billed
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The generate_images method is deprecated")]


def vertex_client(fake: FakeLLMServer) -> genai.Client:
    """A Vertex AI client in express mode (an API key, no Google credentials) pointed at the fake."""
    return genai.Client(vertexai=True, api_key="vertex-fake",
                        http_options=genai_types.HttpOptions(base_url=fake.base_url("vertex")))


def image_fields(event: dict[str, Any]) -> tuple[Any, ...]:
    return event["event_type"], event["model"], event["image_count"], event.get("image_size"), event.get("quality")


# -- OpenAI images ------------------------------------------------------------------------------------


@SYNC_ASYNC
def test_dall_e_3_size_and_quality_come_from_the_request(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    resp = run(llm.images.generate(model="dall-e-3", prompt="a cat", size="1024x1792", quality="hd"))
    assert type(resp) is openai.types.ImagesResponse and resp.size is None  # DALL-E 3 echoes neither
    event = only(tracker, ingest, customer)
    assert image_fields(event) == ("IMAGE_GENERATION", "dall-e-3", 1, "1024x1792", "hd")
    assert event["provider"] == "openai"
    assert "metadata" not in event  # no usage, no id: nothing to add


def test_dall_e_without_size_or_quality_leaves_them_absent(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    llm.images.generate(model="dall-e-3", prompt="a cat")
    assert image_fields(only(tracker, ingest, customer)) == ("IMAGE_GENERATION", "dall-e-3", 1, None, None)


@SYNC_ASYNC
def test_gpt_image_counts_every_image_and_keeps_its_token_usage(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    resp = run(llm.images.generate(model="gpt-image-1", prompt="a cat", n=2, size="auto"))
    assert len(resp.data) == 2
    event = only(tracker, ingest, customer)
    # `auto` is not a size: the one the answer reports (what was made) is recorded
    assert image_fields(event) == ("IMAGE_GENERATION", "gpt-image-1", 2, "1024x1024", "medium")
    assert event["metadata"] == IMAGE_TOKENS_METADATA


@SYNC_ASYNC
def test_images_edit_and_create_variation_multipart_uploads(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)

    async def both_async() -> None:
        await llm.images.edit(model="gpt-image-1", image=[PNG, PNG], prompt="add a hat", quality="high")
        await llm.images.create_variation(image=PNG, n=3, size="512x512")

    if is_async:
        asyncio.run(both_async())
    else:
        llm.images.edit(model="gpt-image-1", image=[PNG, PNG], prompt="add a hat", quality="high")
        llm.images.create_variation(image=PNG, n=3, size="512x512")
    assert fake.requests[-2].json["image"] == [{"filename": "cat.png", "size": len(IMAGE_PNG)}] * 2
    edit, variation = recorded(tracker, ingest, customer)
    assert image_fields(edit) == ("IMAGE_GENERATION", "gpt-image-1", 1, "1024x1024", "high")
    assert edit["metadata"] == IMAGE_TOKENS_METADATA
    # a variation names no model (OpenAI uses dall-e-2) and its answer none either
    assert image_fields(variation) == ("IMAGE_GENERATION", "unknown", 3, "512x512", None)


@SYNC_ASYNC
def test_image_streams_count_completed_images_not_partials(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)

    async def read_async() -> list[Any]:
        first = await llm.images.generate(model="gpt-image-1", prompt="a cat", stream=True, partial_images=2)
        second = await llm.images.edit(model="gpt-image-1", image=PNG, prompt="a hat", n=2, stream=True)
        return [e async for e in first] + [e async for e in second]

    if is_async:
        events = asyncio.run(read_async())
    else:
        events = list(llm.images.generate(model="gpt-image-1", prompt="a cat", stream=True, partial_images=2))
        events += list(llm.images.edit(model="gpt-image-1", image=PNG, prompt="a hat", n=2, stream=True))
    assert [type(e).__name__ for e in events] == ["ImageGenPartialImageEvent"] * 2 + ["ImageGenCompletedEvent"] + \
        ["ImageEditCompletedEvent"] * 2
    generated, edited = recorded(tracker, ingest, customer)
    assert image_fields(generated) == ("IMAGE_GENERATION", "gpt-image-1", 1, "1024x1024", "medium")
    assert generated["metadata"] == IMAGE_TOKENS_METADATA
    assert image_fields(edited)[2] == 2
    assert edited["metadata"] == {key: 2 * value for key, value in IMAGE_TOKENS_METADATA.items()}  # one per image


def test_image_raw_responses_are_recorded_when_parsed(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    raw = llm.images.with_raw_response.generate(model="dall-e-3", prompt="a cat", size="1024x1024")
    assert raw.parse() is raw.parse()
    with llm.images.with_streaming_response.generate(model="gpt-image-1", prompt="a cat") as streaming:
        assert len(streaming.parse().data) == 1
    first, second = recorded(tracker, ingest, customer)
    assert image_fields(first) == ("IMAGE_GENERATION", "dall-e-3", 1, "1024x1024", None)
    assert image_fields(second) == ("IMAGE_GENERATION", "gpt-image-1", 1, "1024x1024", "medium")


# -- OpenAI audio -------------------------------------------------------------------------------------


@SYNC_ASYNC
def test_whisper_transcription_bills_audio_seconds(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer, user_id="user_1")
    resp = run(llm.audio.transcriptions.create(model="whisper-1", file=AUDIO))
    assert type(resp) is openai.types.audio.Transcription
    event = only(tracker, ingest, customer)
    assert (event["event_type"], event["unit_type"], event["quantity"]) == ("CUSTOM", "audio_seconds",
                                                                           WHISPER["seconds"])
    assert event["metadata"] == {"provider": "openai", "model": "whisper-1"}
    assert event["user_id"] == "user_1"
    assert fake.requests[-1].json["file"] == {"filename": "speech.wav", "size": len(AUDIO[1])}


@SYNC_ASYNC
def test_gpt_4o_transcription_bills_tokens(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    run(llm.audio.transcriptions.create(model="gpt-4o-transcribe", file=AUDIO))
    event = only(tracker, ingest, customer)
    assert event["event_type"] == "TOKEN_USAGE" and event["model"] == "gpt-4o-transcribe"
    assert tokens(event) == (TRANSCRIBE["input_tokens"], TRANSCRIBE["output_tokens"], None, None)
    assert event["metadata"] == {"input_audio_tokens": TRANSCRIBE["audio_tokens"],
                                 "input_text_tokens": TRANSCRIBE["text_tokens"]}


@SYNC_ASYNC
def test_transcription_stream_bills_the_tokens_of_its_done_event(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)

    async def read_async() -> list[Any]:
        return [e async for e in await llm.audio.transcriptions.create(model="gpt-4o-transcribe", file=AUDIO,
                                                                         stream=True)]

    events = run(read_async()) if is_async else list(
        llm.audio.transcriptions.create(model="gpt-4o-transcribe", file=AUDIO, stream=True))
    assert events[-1].type == "transcript.text.done"
    event = only(tracker, ingest, customer)
    assert tokens(event) == (TRANSCRIBE["input_tokens"], TRANSCRIBE["output_tokens"], None, None)
    assert "partial" not in event["metadata"]


def test_verbose_json_and_translations_bill_their_duration(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    verbose = llm.audio.transcriptions.create(model="whisper-1", file=AUDIO, response_format="verbose_json")
    assert type(verbose) is openai.types.audio.TranscriptionVerbose
    translation = llm.audio.translations.create(model="whisper-1", file=AUDIO, response_format="verbose_json")
    assert type(translation) is openai.types.audio.TranslationVerbose
    events = recorded(tracker, ingest, customer)
    assert [(e["unit_type"], e["quantity"]) for e in events] == [
        ("audio_seconds", WHISPER["seconds"]), ("audio_seconds", USAGE["openai.translations"]["duration"])]


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt"])
def test_plain_text_transcriptions_have_no_usage_and_are_flagged(fake, tracker, ingest, customer,
                                                                 response_format):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    text = llm.audio.transcriptions.create(model="whisper-1", file=AUDIO, response_format=response_format)
    assert isinstance(text, str) and "Hello from fake" in text
    event = only(tracker, ingest, customer)
    # a paid call whose answer says nothing of its cost: recorded, zero, flagged (as `usage: null` is)
    assert (event["event_type"], event["model"], tokens(event)) == ("TOKEN_USAGE", "whisper-1", (0, 0, None, None))
    assert event["metadata"] == {"partial": True, "stream_end": "no_usage"}


def test_translation_json_has_no_usage_and_is_flagged(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    assert llm.audio.translations.create(model="whisper-1", file=AUDIO).text == "Hello from fake"
    assert only(tracker, ingest, customer)["metadata"] == {"partial": True, "stream_end": "no_usage"}


def speech_event(event: dict[str, Any], text: str, model: str = "tts-1") -> bool:
    assert (event["event_type"], event["unit_type"], event["quantity"]) == ("CUSTOM", "characters", len(text))
    assert event["metadata"] == {"provider": "openai", "model": model}
    return True


@SYNC_ASYNC
def test_speech_bills_the_input_characters(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    text = "Héllo there, how are you?"
    audio = run(llm.audio.speech.create(model="tts-1", voice="alloy", input=text))
    assert type(audio) is openai._legacy_response.HttpxBinaryResponseContent and audio.content == SPEECH_AUDIO
    assert speech_event(only(tracker, ingest, customer), text)


def test_speech_streamed_to_a_file_is_billed_without_parse(fake, tracker, ingest, customer, tmp_path: Path):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    with llm.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="coral",
                                                         input="Hello") as response:
        assert isinstance(response, openai._response.StreamedBinaryAPIResponse)
        response.stream_to_file(tmp_path / "hello.mp3")
    assert (tmp_path / "hello.mp3").read_bytes() == SPEECH_AUDIO
    raw = llm.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="Hi!")
    assert raw.content == SPEECH_AUDIO
    raw.parse()  # billed when it arrived: parsing adds nothing
    first, second = recorded(tracker, ingest, customer)
    assert speech_event(first, "Hello", "gpt-4o-mini-tts") and speech_event(second, "Hi!")


def test_async_speech_streaming_response_read_with_iter_bytes(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, True), customer_id=customer)

    async def read() -> bytes:
        async with llm.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy",
                                                                   input="Hello") as response:
            return b"".join([chunk async for chunk in response.iter_bytes()])

    assert asyncio.run(read()) == SPEECH_AUDIO
    assert speech_event(only(tracker, ingest, customer), "Hello")


# -- Imagen (google-genai on Vertex AI) ---------------------------------------------------------------


@SYNC_ASYNC
def test_imagen_generate_images_counts_the_images_returned(fake, tracker, ingest, customer, is_async):
    client = vertex_client(fake)  # kept referenced: a genai.Client closes its connection when collected
    llm = tracker.wrap(client=client, customer_id=customer)
    models = llm.aio.models if is_async else llm.models
    default = run(models.generate_images(model=IMAGEN, prompt="a cat"))
    assert type(default) is genai_types.GenerateImagesResponse and len(default.generated_images or ()) == 4
    config = genai_types.GenerateImagesConfig(number_of_images=2, image_size="2K")
    two = run(models.generate_images(model=IMAGEN, prompt="a cat", config=config))
    assert two.generated_images[0].image.image_bytes == IMAGE_PNG
    run(models.generate_images(model=IMAGEN, prompt="a cat", config={"number_of_images": 1, "image_size": "1K"}))
    events = recorded(tracker, ingest, customer)
    assert [image_fields(e) for e in events] == [("IMAGE_GENERATION", IMAGEN, 4, None, None),
                                                 ("IMAGE_GENERATION", IMAGEN, 2, "2K", None),
                                                 ("IMAGE_GENERATION", IMAGEN, 1, "1K", None)]
    assert {e["provider"] for e in events} == {"google"}


def test_imagen_error_propagates_unchanged_and_bills_nothing(fake, tracker, ingest, customer):
    client = vertex_client(fake)
    llm = tracker.wrap(client=client, customer_id=customer)
    fake.fail_next(1, status=429)
    with pytest.raises(genai_errors.ClientError) as raised:
        llm.models.generate_images(model=IMAGEN, prompt="a cat")
    assert raised.value.code == 429
    assert recorded(tracker, ingest, customer) == []


# -- provider errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["images.generate", "images.stream", "transcriptions", "speech.create",
                                  "speech.streaming"])
def test_openai_media_errors_propagate_unchanged_and_bill_nothing(fake, tracker, ingest, customer, call):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    fake.fail_next(1, status=500)
    with pytest.raises(openai.InternalServerError):
        if call == "images.generate":
            llm.images.generate(model="dall-e-3", prompt="a cat")
        elif call == "images.stream":
            list(llm.images.generate(model="gpt-image-1", prompt="a cat", stream=True))
        elif call == "transcriptions":
            llm.audio.transcriptions.create(model="whisper-1", file=AUDIO)
        elif call == "speech.create":
            llm.audio.speech.create(model="tts-1", voice="alloy", input="Hello")
        else:
            with llm.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="Hello"):
                pass
    assert recorded(tracker, ingest, customer) == []


# -- Responses built-in tools -------------------------------------------------------------------------


@SYNC_ASYNC
def test_responses_built_in_tool_calls_are_counted(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    tools: Any = [{"type": "web_search"}, {"type": "code_interpreter", "container": {"type": "auto"}},
                  {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    resp = run(llm.responses.create(model="gpt-4o", input="What's new?", tools=tools))
    assert [item.type for item in resp.output].count("web_search_call") == TOOLS["web_search_call"]
    event = only(tracker, ingest, customer)
    assert tokens(event) == RESPONSES_TOKENS
    assert event["metadata"] == {
        "response_id": resp.id, "web_search_calls": TOOLS["web_search_call"],
        "code_interpreter_calls": TOOLS["code_interpreter_call"],
        "cache_creation_input_tokens": USAGE["openai.responses"]["cache_write_tokens"],
    }


@SYNC_ASYNC
def test_responses_stream_counts_tool_calls_of_the_completed_response(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=openai_client(fake, is_async), customer_id=customer)
    tools: Any = [{"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "image_generation"}]

    async def read_async() -> list[Any]:
        return [e async for e in await llm.responses.create(model="gpt-4o", input="Hi", tools=tools, stream=True)]

    events = run(read_async()) if is_async else list(
        llm.responses.create(model="gpt-4o", input="Hi", tools=tools, stream=True))
    assert events[-1].type == "response.completed"
    metadata = only(tracker, ingest, customer)["metadata"]
    assert (metadata["file_search_calls"], metadata["image_generation_calls"]) == (
        TOOLS["file_search_call"], TOOLS["image_generation_call"])
    assert "web_search_calls" not in metadata


def test_responses_without_built_in_tools_add_no_counts(fake, tracker, ingest, customer):
    llm = tracker.wrap(client=openai_client(fake, False), customer_id=customer)
    resp = llm.responses.create(model="gpt-4o", input="Hi")
    assert only(tracker, ingest, customer)["metadata"] == {
        "response_id": resp.id, "cache_creation_input_tokens": USAGE["openai.responses"]["cache_write_tokens"]}


# -- token kinds without a field of their own ----------------------------------------------------------


@SYNC_ASYNC
def test_anthropic_cache_writes_by_ttl_are_kept(fake, tracker, ingest, customer, is_async):
    llm = tracker.wrap(client=anthropic_client(fake, is_async), customer_id=customer)

    async def both_async() -> Any:
        msg = await llm.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user",
                                                                                           "content": "Hi"}])
        async for _ in await llm.messages.create(model="claude-sonnet-4-6", max_tokens=10, stream=True,
                                                 messages=[{"role": "user", "content": "Hi"}]):
            pass
        return msg

    if is_async:
        msg = asyncio.run(both_async())
    else:
        msg = llm.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user",
                                                                                     "content": "Hi"}])
        list(llm.messages.create(model="claude-sonnet-4-6", max_tokens=10, stream=True,
                                 messages=[{"role": "user", "content": "Hi"}]))
    assert type(msg) is anthropic.types.Message
    for event in recorded(tracker, ingest, customer):  # the fake writes everything with the 5-minute TTL
        assert event["metadata"]["cache_creation_input_tokens"] == CLAUDE["cache_creation_input_tokens"]
        assert event["metadata"]["cache_creation_5m_input_tokens"] == CLAUDE["cache_creation_input_tokens"]
        assert "cache_creation_1h_input_tokens" not in event["metadata"]  # zero: left out


def test_openai_chat_audio_and_prediction_tokens_are_kept_when_not_zero():
    usage = openai.types.CompletionUsage.model_validate({
        "prompt_tokens": 900, "completion_tokens": 300, "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 400, "image_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 250, "accepted_prediction_tokens": 20,
                                      "rejected_prediction_tokens": 7},
    })
    read = u.openai_chat_usage(usage)
    assert (read.input_tokens, read.output_tokens) == (900, 300)  # the kinds are parts of these, not added
    assert read.extra == {"input_audio_tokens": 400, "output_audio_tokens": 250, "accepted_prediction_tokens": 20,
                          "rejected_prediction_tokens": 7}


def test_anthropic_thinking_and_web_searches_are_read():
    usage = anthropic.types.Usage.model_validate({
        "input_tokens": 10, "output_tokens": 500, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        "output_tokens_details": {"thinking_tokens": 320},
        "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1},
    })
    read = u.anthropic_usage(usage)
    assert (read.input_tokens, read.output_tokens, read.reasoning_tokens) == (310, 500, 320)
    assert read.extra == {"cache_creation_input_tokens": 300, "cache_creation_5m_input_tokens": 100,
                          "cache_creation_1h_input_tokens": 200, "web_search_calls": 3}


def test_gemini_modalities_priced_apart_from_text_are_kept():
    meta = genai_types.GenerateContentResponseUsageMetadata(
        prompt_token_count=1500, candidates_token_count=1400, total_token_count=2900,
        prompt_tokens_details=[genai_types.ModalityTokenCount(modality=genai_types.MediaModality.TEXT, token_count=300),
                               genai_types.ModalityTokenCount(modality=genai_types.MediaModality.AUDIO,
                                                              token_count=1200)],
        candidates_tokens_details=[genai_types.ModalityTokenCount(modality=genai_types.MediaModality.IMAGE,
                                                                  token_count=1290),
                                   genai_types.ModalityTokenCount(modality=genai_types.MediaModality.TEXT,
                                                                  token_count=110)],
    )
    read = u.gemini_usage(meta)
    assert (read.input_tokens, read.output_tokens) == (1500, 1400)
    assert read.extra == {"input_audio_tokens": 1200, "output_image_tokens": 1290}


def test_readers_ignore_what_they_do_not_know():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert u.read_openai_images(object()) == u.Observation()
        assert u.read_openai_transcription("plain text") == u.Observation()
        assert u.read_openai_speech(None, {}) == u.Observation()
        assert u.read_imagen(genai_types.GenerateImagesResponse(generated_images=[
            genai_types.GeneratedImage(rai_filtered_reason="filtered")])) == u.Observation()


def test_every_metadata_key_the_readers_add_is_documented():
    guide = (ROOT / "docs" / "guides" / "llm.md").read_text()
    keys = set(u.RESPONSES_TOOL_CALLS.values()) | set(IMAGE_TOKENS_METADATA) | {
        "cache_creation_input_tokens", "cache_creation_5m_input_tokens", "cache_creation_1h_input_tokens",
        "input_audio_tokens", "input_image_tokens", "input_video_tokens", "input_text_tokens", "output_audio_tokens",
        "output_image_tokens", "output_text_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens",
        "web_search_calls", "cached_input_tokens"}
    keys |= {f"{side}_{modality}_tokens" for side in ("input", "output") for modality in ("audio", "image")}
    assert [key for key in sorted(keys) if f"`{key}`" not in guide] == []
