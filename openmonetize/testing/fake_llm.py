"""A fake LLM provider server, so usage-tracking code can be tested and benchmarked against the real SDKs.

The real provider client libraries (openai, anthropic, google-genai, groq) are pointed at
it on loopback; it answers like each provider's HTTP API does, with fixed, documented
token usage, so a test can assert that a wrapper records exactly what the provider
reported, over real sockets, without network access or mocks::

    with FakeLLMServer() as fake:
        client = openai.OpenAI(api_key="sk-fake", base_url=fake.base_url("openai"), max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o", messages=[...])
        assert reply.usage.prompt_tokens == USAGE["openai.chat"]["prompt_tokens"]

Endpoints (``base_url(provider)`` gives what to pass to the SDK):

- ``openai``: ``POST {base}/chat/completions``, ``/responses``, ``/embeddings``,
  ``/images/generations`` (JSON), ``/images/edits`` and ``/images/variations`` (multipart uploads),
  ``/audio/transcriptions`` and ``/audio/translations`` (multipart), ``/audio/speech`` (answers audio
  bytes, :data:`SPEECH_AUDIO`)
- ``openrouter``: ``POST {base}/chat/completions``, ``/embeddings`` (OpenAI's shape plus
  ``provider`` and ``usage.cost``)
- ``groq``: ``POST {base}/openai/v1/chat/completions`` (the groq SDK appends that path)
- ``anthropic``: ``POST {base}/v1/messages``
- ``gemini``: ``POST {base}/{version}/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse`` (google-genai 3.x uses version ``v1``; any ``v1*`` works)
- ``vertex``: ``POST {base}/{version}/publishers/google/models/{model}:predict`` (express mode) or
  ``.../projects/{p}/locations/{l}/publishers/...``: Imagen, what google-genai's ``generate_images``,
  ``edit_image`` and ``upscale_image`` call on ``genai.Client(vertexai=True, api_key=...,
  http_options=types.HttpOptions(base_url=base_url("vertex")))`` (an API key: no Google credentials)
- ``azure``: ``POST {base}/openai/deployments/{deployment}/chat/completions?api-version=...``, what
  ``openai.AzureOpenAI(azure_endpoint=base_url("azure"), api_version=...)`` calls (OpenAI's shape)
- OpenAI-compatible gateways that bend the rules, each ``POST {base}/chat/completions`` in OpenAI's
  shape: ``gateway-same-id`` answers the same response id (``chatcmpl-gateway``) to every call;
  ``gateway-cached-above-prompt`` reports more cached tokens than prompt tokens;
  ``gateway-reasoning-above-completion`` more reasoning than completion tokens;
  ``gateway-null-usage`` answers ``"usage": null`` (and streams no usage chunk, even when asked)

Usage: every answer of an endpoint carries the numbers in ``USAGE[endpoint]``, streamed or
not. Each field has its own odd value, so a field mapped to the wrong place shows. Keys are
the provider's wire names, flattened (``cached_tokens`` lives in ``prompt_tokens_details``
on the wire). How each provider counts, which is what a tracker must get right:

- OpenAI-style chat: ``prompt_tokens`` includes ``cached_tokens``; ``completion_tokens``
  includes ``reasoning_tokens``; ``total_tokens = prompt_tokens + completion_tokens``.
  Streams report usage only when the request sets ``stream_options.include_usage``: then
  every chunk has ``"usage": null`` and one last chunk, with ``"choices": []``, has it.
  OpenRouter also honours ``{"usage": {"include": true}}`` and sends an SSE comment line
  (``: OPENROUTER PROCESSING``) first, as it does.
- Groq: non-stream answers as OpenAI plus timings (``queue_time`` ...); streams ignore
  ``stream_options`` and put usage in the final chunk (the one with ``finish_reason``) under
  ``x_groq.usage``, as Groq does.
- OpenAI Responses: ``input_tokens`` includes ``cached_tokens``; ``output_tokens`` includes
  ``reasoning_tokens``. Streams carry usage only in ``response.completed``.
- Embeddings: ``total_tokens == prompt_tokens``; vectors honour ``encoding_format``
  (the openai SDK asks for ``base64`` float32 by default) and ``dimensions`` (default 8).
- Anthropic: ``input_tokens`` excludes both cache counts (total input is the sum of the
  three). Streams: ``message_start`` carries the input counts and a preliminary
  ``output_tokens`` of 1; ``message_delta`` carries CUMULATIVE totals (input counts again,
  and the final ``output_tokens``), so adding the two double counts.
- Gemini: ``totalTokenCount = promptTokenCount + candidatesTokenCount + thoughtsTokenCount``;
  ``promptTokenCount`` includes ``cachedContentTokenCount``. Each streamed chunk carries
  RUNNING totals (``candidatesTokenCount`` grows 98, 195, 293; the others repeat), so the
  last chunk has the final numbers and summing chunks overcounts.

- OpenAI images: ``data`` has ``n`` images (default 1), each :data:`IMAGE_PNG` as ``b64_json``
  (DALL-E: a ``url`` unless ``response_format="b64_json"``; DALL-E 3 adds ``revised_prompt``).
  gpt-image answers add ``size`` and ``quality`` (``auto`` or none resolved to ``1024x1024`` and
  ``medium``) and ``usage`` (``USAGE["openai.images"]``, the same for any ``n``); DALL-E answers
  echo neither size nor quality and have no usage, as OpenAI's do. ``stream=True`` (gpt-image):
  ``partial_images`` ``*.partial_image`` events then one ``*.completed`` event per image, each
  with the usage numbers (``image_generation.*``; ``image_edit.*`` for edits). A request without
  ``model`` is served as ``dall-e-2``.
- Transcriptions: ``response_format`` ``json`` (default) answers ``{text, usage}``: whisper models
  ``{"type": "duration", "seconds"}``, others ``{"type": "tokens", ...}``; ``verbose_json``
  (whisper only) adds ``duration``; ``text`` / ``srt`` / ``vtt`` answer plain text without usage.
  ``stream=True`` (not whisper: 400) sends three ``transcript.text.delta`` events and a
  ``transcript.text.done`` with the token usage. Translations (whisper only): ``json`` is
  ``{text}`` alone, ``verbose_json`` adds ``duration`` (``USAGE["openai.translations"]``).
- Multipart requests are recorded as their form: text fields as strings, files as
  ``{"filename", "size"}``, a repeated field (``image[]``) as a list under its name without ``[]``.
- Vertex predict: ``parameters.sampleCount`` images (default 4; 1 for ``mode: upscale``) as
  ``predictions: [{bytesBase64Encoded, mimeType}]``, no usage, as Vertex answers.
- Responses built-in tools: for each ``tools`` entry of type ``web_search*``, ``file_search``,
  ``code_interpreter`` or ``image_generation``, the ``output`` starts with the number of
  ``*_call`` items given in ``USAGE["openai.responses.tools"]`` (streams: in ``response.completed``
  and their own ``output_item`` events); function tools get none.

Every stream sends exactly three content chunks (``"Hello"``, ``" from"``, ``" fake"``)
before its final parts; the first chat chunk carries the assistant role too (OpenAI sends the
role in a chunk of its own, with empty content, first). When the request asks for JSON output for a schema (OpenAI
``response_format``/``text.format`` ``json_schema``, Anthropic ``output_config.format``,
Gemini ``responseSchema``/``responseJsonSchema``), the text is instead a JSON value valid for
that schema (split in three for streams), so the SDKs' ``parse`` helpers succeed.
Tool calls: a non-streamed chat request (OpenAI, OpenRouter, Groq) that offers ``tools`` and has no
``tool`` message yet is answered with a call of its first function tool (arguments valid for its
``parameters`` schema, ``finish_reason: "tool_calls"``, the usual usage); once a ``tool`` message is
in the conversation the answer is text again, so an agent's tool loop makes exactly two requests.

Models: answers report the requested model as :func:`reported_model` maps it: OpenAI's
generation endpoints add a date (``gpt-4o`` -> ``gpt-4o-2024-08-06``) and Anthropic adds one
(``claude-haiku-4-5`` -> ``claude-haiku-4-5-20251001``) unless the name already ends in a
date, as their APIs report dated snapshots; embeddings, OpenRouter, Groq and Gemini echo
the name unchanged. Ids (``chatcmpl-``, ``resp_``, ``msg_``, ``gen-``, Gemini
``responseId``) are built from the server's request sequence number: deterministic and
different for every request of a server's lifetime (``reset()`` does not reuse them).
OpenAI and Groq answers name a request id in ``x-request-id``, Anthropic's in ``request-id``.

Faults: ``fail_next`` answers with the provider's own error body, so each SDK raises its
own exception type. The openai, anthropic and groq SDKs retry 5xx twice by default, each
retry consuming one queued failure; construct clients with ``max_retries=0`` in tests.
google-genai does not retry unless ``HttpOptions.retry_options`` is set.
``cut_next_stream`` ends a streamed body mid-way: streams use chunked transfer encoding,
so the client sees an incomplete body and raises during iteration (openai:
``APIConnectionError``; anthropic and google-genai: ``httpx2.RemoteProtocolError``, or
``aiohttp.ClientPayloadError`` from google-genai's async client when aiohttp is installed; groq:
``httpx.RemoteProtocolError``). No continuation token is ever sent, so google-genai does not
resume a cut stream.

Only the standard library is used (``email`` parses the multipart uploads); nothing is written
to disk, nothing sleeps. JSON answers (and audio, plain text) keep the connection alive
(Content-Length); streams are chunked and keep it alive too. (The
openai SDK's sync ``Stream`` stops reading at ``data: [DONE]``, before the chunked body's end,
so it opens a new connection for every chat stream; its async one drains and reuses it.)
"""

from __future__ import annotations

import base64
import email.policy
import json
import logging
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.parser import BytesParser
from http import HTTPStatus
from typing import Any, NamedTuple

from .loopback import LoopbackHTTPServer, LoopbackService, TrackedHandler

__all__ = ["IMAGE_PNG", "REPLY_CHUNKS", "REPLY_TEXT", "SPEECH_AUDIO", "USAGE", "FakeLLMServer", "RecordedRequest",
           "reported_model"]

logger = logging.getLogger("openmonetize.testing.fake_llm")

# ---------------------------------------------------------------------------- the numbers

USAGE: dict[str, dict[str, int | float]] = {
    # POST /openai/v1/chat/completions: usage.{prompt_tokens, completion_tokens, total_tokens},
    # usage.prompt_tokens_details.cached_tokens, usage.completion_tokens_details.reasoning_tokens
    "openai.chat": {
        "prompt_tokens": 1203,  # all input, cached included
        "cached_tokens": 512,  # part of prompt_tokens served from the prompt cache
        "completion_tokens": 341,  # all output, reasoning included
        "reasoning_tokens": 128,  # part of completion_tokens spent on hidden reasoning
        "total_tokens": 1544,  # prompt_tokens + completion_tokens
    },
    # POST /openai/v1/responses: usage.{input_tokens, output_tokens, total_tokens},
    # usage.input_tokens_details.{cached_tokens, cache_write_tokens},
    # usage.output_tokens_details.reasoning_tokens
    "openai.responses": {
        "input_tokens": 1311,  # all input, cached included
        "cached_tokens": 640,  # part of input_tokens read from the prompt cache
        "cache_write_tokens": 83,  # part of input_tokens written to the prompt cache
        "output_tokens": 457,  # all output, reasoning included
        "reasoning_tokens": 192,  # part of output_tokens spent on reasoning
        "total_tokens": 1768,  # input_tokens + output_tokens
    },
    # POST /openai/v1/responses with built-in tools: how many output items of each kind the answer has
    # (one `tools` entry of type web_search*, file_search, code_interpreter or image_generation each)
    "openai.responses.tools": {
        "web_search_call": 3, "file_search_call": 2, "code_interpreter_call": 1, "image_generation_call": 4,
    },
    # POST /openai/v1/embeddings: usage.{prompt_tokens, total_tokens}
    "openai.embeddings": {"prompt_tokens": 37, "total_tokens": 37},
    # POST /openai/v1/images/{generations,edits,variations} with a gpt-image model: usage.{input_tokens,
    # output_tokens, total_tokens}, usage.input_tokens_details.{text_tokens, image_tokens} (input_*),
    # usage.output_tokens_details.{text_tokens, image_tokens} (output_*); the same numbers whatever `n`
    # is (a stream's every `*.completed` event carries them: one event per image). DALL-E: no usage.
    "openai.images": {
        "input_tokens": 83,  # input_text_tokens + input_image_tokens
        "input_text_tokens": 29,
        "input_image_tokens": 54,
        "output_tokens": 4271,  # output_text_tokens + output_image_tokens
        "output_text_tokens": 111,
        "output_image_tokens": 4160,
        "total_tokens": 4354,
    },
    # POST /openai/v1/audio/transcriptions with whisper-1: usage {"type": "duration", "seconds"}, and
    # `duration` in verbose_json
    "openai.transcriptions.duration": {"seconds": 41.5},
    # POST /openai/v1/audio/transcriptions with any other model (gpt-4o-transcribe...): usage {"type":
    # "tokens", input_tokens, output_tokens, total_tokens, input_token_details.{audio_tokens, text_tokens}};
    # a stream carries it in its final transcript.text.done event
    "openai.transcriptions.tokens": {
        "input_tokens": 212,  # audio_tokens + text_tokens (the prompt)
        "audio_tokens": 197,
        "text_tokens": 15,
        "output_tokens": 33,
        "total_tokens": 245,
    },
    # POST /openai/v1/audio/translations (whisper-1): no usage; verbose_json's `duration`
    "openai.translations": {"duration": 27.25},
    # POST /openrouter/api/v1/chat/completions: OpenAI's fields plus usage.cost (credits, USD)
    "openrouter.chat": {
        "prompt_tokens": 1427,
        "cached_tokens": 384,
        "completion_tokens": 263,
        "reasoning_tokens": 96,
        "total_tokens": 1690,
        "cost": 0.00123,  # what OpenRouter charged for the call
    },
    # POST /openrouter/api/v1/embeddings
    "openrouter.embeddings": {"prompt_tokens": 29, "total_tokens": 29, "cost": 0.0000058},
    # POST /groq/openai/v1/chat/completions: usage (non-stream) or x_groq.usage (stream)
    "groq.chat": {
        "prompt_tokens": 1151,
        "cached_tokens": 256,
        "completion_tokens": 219,
        "reasoning_tokens": 64,
        "total_tokens": 1370,
        "queue_time": 0.0213,  # seconds; Groq's timings, not tokens
        "prompt_time": 0.0457,
        "completion_time": 0.1371,
        "total_time": 0.1828,  # prompt_time + completion_time
    },
    # POST /azure/openai/deployments/{deployment}/chat/completions: OpenAI's chat fields
    "azure.chat": {
        "prompt_tokens": 1187,
        "cached_tokens": 448,
        "completion_tokens": 311,
        "reasoning_tokens": 0,
        "total_tokens": 1498,
    },
    # POST /gateway-same-id/v1/chat/completions: consistent numbers, one response id for every call
    "gateway-same-id.chat": {
        "prompt_tokens": 911, "cached_tokens": 128, "completion_tokens": 173, "reasoning_tokens": 32,
        "total_tokens": 1084,
    },
    # POST /gateway-cached-above-prompt/v1/chat/completions: cached_tokens > prompt_tokens (inconsistent)
    "gateway-cached-above-prompt.chat": {
        "prompt_tokens": 500, "cached_tokens": 600, "completion_tokens": 120, "reasoning_tokens": 0,
        "total_tokens": 620,
    },
    # POST /gateway-reasoning-above-completion/v1/chat/completions: reasoning_tokens > completion_tokens
    "gateway-reasoning-above-completion.chat": {
        "prompt_tokens": 400, "cached_tokens": 0, "completion_tokens": 100, "reasoning_tokens": 150,
        "total_tokens": 500,
    },
    # POST /gateway-null-usage/v1/chat/completions: "usage": null (no entry here)
    # POST /anthropic/v1/messages: usage.*
    "anthropic.messages": {
        "input_tokens": 1089,  # uncached input only
        "cache_creation_input_tokens": 233,  # input written to the cache (billed extra)
        "cache_read_input_tokens": 1473,  # input read from the cache (billed less)
        "output_tokens": 367,  # final total; a stream's message_start says 1
    },
    # POST /gemini/v1/models/{model}:generateContent and :streamGenerateContent: usageMetadata.*
    "gemini.generateContent": {
        "promptTokenCount": 1277,  # all input, cached included
        "cachedContentTokenCount": 703,  # part of promptTokenCount served from the cache
        "candidatesTokenCount": 293,  # visible output, thoughts excluded
        "thoughtsTokenCount": 157,  # thinking output, billed as output
        "totalTokenCount": 1727,  # prompt + candidates + thoughts
    },
}

#: the audio bytes every /audio/speech answer carries (TTS bills the input's characters: no usage)
SPEECH_AUDIO = bytes(range(256)) * 8
#: the PNG (1x1, one orange pixel) every image answer carries, base64-encoded as b64_json / bytesBase64Encoded
IMAGE_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP438DwHwAGgAJ/EEwb4QAAAABJRU5ErkJggg==")

REPLY_TEXT = "Hello from fake"
REPLY_CHUNKS = ("Hello", " from", " fake")  # what a stream sends, in order

_PATHS = {
    "openai": "/openai/v1",
    "openrouter": "/openrouter/api/v1",
    "groq": "/groq",
    "anthropic": "/anthropic",
    "gemini": "/gemini",
    "vertex": "/vertex",
    "azure": "/azure",
    **{name: f"/{name}/v1" for name in ("gateway-same-id", "gateway-cached-above-prompt",
                                        "gateway-reasoning-above-completion", "gateway-null-usage")},
}
_AZURE_PATH = re.compile(r"/azure/openai/deployments/([^/]+)/chat/completions")
_MODEL_DATES = {"openai": "-2024-08-06", "anthropic": "-20251001"}
_DATED = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")
_GEMINI_PATH = re.compile(r"/gemini/(v1[a-z0-9]*)/models/([^/:]+):(generateContent|streamGenerateContent)")
# Vertex AI: express mode (API key) or a project's path
_VERTEX_PATH = re.compile(
    r"/vertex/(v1[a-z0-9]*)/(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/([^/:]+):predict")
_OPENROUTER_VENDORS = {"openai": "OpenAI", "anthropic": "Anthropic", "google": "Google", "meta-llama": "Meta"}
_EMBEDDING_DIMENSIONS = 8

Json = dict[str, Any]


def reported_model(provider: str, requested: str) -> str:
    """The model name a generation answer reports for ``requested`` (embeddings echo it unchanged)."""
    suffix = _MODEL_DATES.get(provider)
    if suffix is None or _DATED.search(requested):
        return requested
    return requested + suffix


@dataclass(frozen=True)
class RecordedRequest:
    """One provider request as received; headers are left out so API keys are never kept."""

    provider: str
    path: str  # e.g. "/openai/v1/chat/completions", without the query
    query: str  # raw query string, e.g. "alt=sse", or ""
    json: Json  # the parsed body ({} when it is not a JSON object)


# ---------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class _Event:
    data: bytes
    content: bool = False  # one of the three content chunks, which cut_next_stream counts


@dataclass(frozen=True)
class _Reply:
    status: int = 200
    body: Json | None = None  # a JSON answer; None (and no `content`) means `events` is streamed
    events: Sequence[_Event] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None  # a non-JSON answer (audio, transcription text), sent as `content_type`
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class _Call:
    """What the builders need to know about a request."""

    provider: str
    endpoint: str
    model: str
    body: Json
    seq: int
    created: int

    def id(self, prefix: str, width: int = 24) -> str:
        return f"{prefix}{self.seq:0{width}d}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _sse(data: Any, event: str | None = None, *, content: bool = False, newline: str = "\n") -> _Event:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}{newline}" if event else ""
    return _Event(f"{head}data: {text}{newline}{newline}".encode(), content)


def _split3(text: str) -> list[str]:
    """Three content chunks: the reply text's words, or a JSON text cut in thirds."""
    if text == REPLY_TEXT:
        return list(REPLY_CHUNKS)
    a, b = len(text) // 3, 2 * len(text) // 3
    return [text[:a], text[a:b], text[b:]]


def _running(final: int, k: int) -> int:
    """Running total after chunk k of 3 (1-based): what a streamed count has reached so far."""
    return round(final * k / 3)


# -- JSON output for a requested schema


_DEPTH = 4  # past this, optional parts are left out so recursive schemas end
_STRING_FORMATS = {
    "date-time": "2024-01-02T03:04:05Z",
    "date": "2024-01-02",
    "time": "03:04:05",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "email": "fake@example.com",
    "uri": "https://example.com/fake",
}


def _example(schema: Any, root: Mapping[str, Any], depth: int = 0) -> Any:
    """A simple value valid for a JSON schema (or Gemini's OpenAPI-style schema)."""
    if not isinstance(schema, Mapping):
        return "fake"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _example(_resolve(ref, root), root, depth)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):  # allOf: pydantic only wraps a lone $ref in one
        options = schema.get(key)
        if isinstance(options, list) and options:
            concrete = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            if not concrete or (depth >= _DEPTH and len(concrete) < len(options)):
                return None
            return _example(concrete[0], root, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        concrete_kinds = [k for k in kind if k != "null"]
        if not concrete_kinds or (depth >= _DEPTH and "null" in kind):
            return None
        kind = concrete_kinds[0]
    if schema.get("nullable") is True and depth >= _DEPTH:
        return None
    if not isinstance(kind, str):
        kind = "object" if "properties" in schema else "array" if "items" in schema else ""
    kind = kind.lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        everything = "required" not in schema and depth < _DEPTH
        return {
            name: _example(sub, root, depth + 1)
            for name, sub in properties.items()
            if name in required or everything
        }
    if kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [_example(sub, root, depth + 1) for sub in prefix]
        count = max(int(schema.get("minItems", 0)), 1 if depth < _DEPTH else 0)
        return [_example(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "string":
        text = _STRING_FORMATS.get(str(schema.get("format")), "fake")
        text = text.ljust(int(schema.get("minLength", 0)), "x")
        return text[: int(schema["maxLength"])] if "maxLength" in schema else text
    if kind in ("integer", "number"):
        value: float = 7 if kind == "integer" else 7.5
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if isinstance(low, (int, float)) and value <= low:
            value = low + (1 if "exclusiveMinimum" in schema else 0)
        if isinstance(high, (int, float)) and value >= high:
            value = high - (1 if "exclusiveMaximum" in schema else 0)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "fake"


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    node: Any = root
    for part in ref.lstrip("#").split("/"):
        if part:
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, Mapping) else {}
    return node


def _schema_text(schema: Any) -> str:
    return json.dumps(_example(schema, schema if isinstance(schema, Mapping) else {}))


def _dig(body: Mapping[str, Any], *keys: str) -> Any:
    node: Any = body
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _reply_text(call: _Call) -> str:
    """REPLY_TEXT, or JSON for the schema the request asks the answer to follow."""
    body = call.body
    if call.provider == "gemini":
        config = _dig(body, "generationConfig")
        if not isinstance(config, Mapping):
            return REPLY_TEXT
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if config.get("responseMimeType") == "application/json":
            return _schema_text(schema) if schema else json.dumps({"text": REPLY_TEXT})
        return REPLY_TEXT
    if call.provider == "anthropic":
        fmt = _dig(body, "output_config", "format")
    elif call.endpoint == "responses":
        fmt = _dig(body, "text", "format")
    else:
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            fmt = {"type": "json_schema", "schema": _dig(fmt, "json_schema", "schema") or {}}
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        return _schema_text(fmt.get("schema") or {})
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        return json.dumps({"text": REPLY_TEXT})
    return REPLY_TEXT


# -- OpenAI, OpenRouter, Groq: chat completions


def _chat_usage(provider: str) -> Json | None:
    n = USAGE.get(f"{provider}.chat")
    if n is None:  # gateway-null-usage
        return None
    usage: Json = {
        "prompt_tokens": n["prompt_tokens"],
        "completion_tokens": n["completion_tokens"],
        "total_tokens": n["total_tokens"],
        "prompt_tokens_details": {"cached_tokens": n["cached_tokens"]},
        "completion_tokens_details": {"reasoning_tokens": n["reasoning_tokens"]},
    }
    if provider == "openai":
        usage["prompt_tokens_details"]["audio_tokens"] = 0
        usage["completion_tokens_details"].update(
            audio_tokens=0, accepted_prediction_tokens=0, rejected_prediction_tokens=0
        )
    elif provider == "openrouter":
        usage["cost"] = n["cost"]
        usage["is_byok"] = False
    elif provider == "groq":
        usage.update({key: n[key] for key in ("queue_time", "prompt_time", "completion_time", "total_time")})
    return usage


def _chat_envelope(call: _Call, obj: str) -> Json:
    if call.provider == "openrouter":
        vendor = call.model.split("/", 1)[0] if "/" in call.model else "openai"
        envelope: Json = {"id": f"gen-{call.created}-fake{call.seq:012d}"}
        envelope["provider"] = _OPENROUTER_VENDORS.get(vendor, vendor.title())
    elif call.provider == "gateway-same-id":
        envelope = {"id": "chatcmpl-gateway"}
    else:
        envelope = {"id": call.id("chatcmpl-", 29)}
    envelope.update(object=obj, created=call.created, model=reported_model(call.provider, call.model))
    if call.provider == "openai":
        envelope["service_tier"] = "default"
    envelope["system_fingerprint"] = "fp_fake0001"
    return envelope


def _tool_call(call: _Call) -> Json | None:
    """The assistant message calling the request's first function tool, if it offers tools and none has
    been answered yet (no ``tool`` message), so an agent's tool loop makes exactly two requests."""
    tools = call.body.get("tools")
    messages = call.body.get("messages")
    if not isinstance(tools, list) or not isinstance(messages, list):
        return None
    if any(isinstance(m, Mapping) and m.get("role") == "tool" for m in messages):
        return None
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) and tool.get("type") == "function" else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            arguments = _schema_text(function.get("parameters") or {"type": "object", "properties": {}})
            return {"role": "assistant", "content": None, "refusal": None, "annotations": [], "tool_calls": [
                {"id": call.id("call_fake", 15), "type": "function",
                 "function": {"name": function["name"], "arguments": arguments}}]}
    return None


def _chat(call: _Call) -> _Reply:
    text = _reply_text(call)
    if call.body.get("stream") is True:
        return _Reply(events=_chat_stream(call, text))
    message: Json | None = _tool_call(call)
    finish = "stop" if message is None else "tool_calls"
    if message is None:
        message = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    answer = _chat_envelope(call, "chat.completion")
    answer["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
    answer["usage"] = _chat_usage(call.provider)
    if call.provider == "groq":
        answer["x_groq"] = {"id": call.id("req_01fake", 16)}
    return _Reply(body=answer)


def _chat_stream(call: _Call, text: str) -> list[_Event]:
    base = _chat_envelope(call, "chat.completion.chunk")
    include_usage = call.provider != "groq" and (
        _dig(call.body, "stream_options", "include_usage") is True or _dig(call.body, "usage", "include") is True
    )
    if include_usage:
        base["usage"] = None

    def chunk(delta: Json, finish: str | None = None, **extra: Any) -> Json:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **extra}

    events = [_Event(b": OPENROUTER PROCESSING\n\n")] if call.provider == "openrouter" else []
    groq_id = call.id("req_01fake", 16)
    for i, part in enumerate(_split3(text)):
        delta: Json = {"role": "assistant", "content": part} if i == 0 else {"content": part}
        extra: Json = {"x_groq": {"id": groq_id}} if call.provider == "groq" and i == 0 else {}
        events.append(_sse(chunk(delta, None, **extra), content=True))
    if call.provider == "groq":
        events.append(_sse(chunk({}, "stop", x_groq={"id": groq_id, "usage": _chat_usage("groq")})))
    else:
        events.append(_sse(chunk({}, "stop")))
    usage = _chat_usage(call.provider)
    if include_usage and usage is not None:
        events.append(_sse({**base, "choices": [], "usage": usage}))
    events.append(_sse("[DONE]"))
    return events


# -- OpenAI: responses


def _responses_usage() -> Json:
    n = USAGE["openai.responses"]
    return {
        "input_tokens": n["input_tokens"],
        "input_tokens_details": {"cached_tokens": n["cached_tokens"], "cache_write_tokens": n["cache_write_tokens"]},
        "output_tokens": n["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": n["reasoning_tokens"]},
        "total_tokens": n["total_tokens"],
    }


def _response_message(call: _Call, text: str | None) -> Json:
    done = text is not None
    content: list[Json] = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if done else []
    return {
        "id": call.id("msg_fake", 40),
        "type": "message",
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": content,
    }


def _tool_items(call: _Call) -> list[Json]:
    """The built-in tool calls a Responses answer shows first: USAGE["openai.responses.tools"] of each kind
    the request's `tools` names (function tools are the caller's own: none)."""
    counts = USAGE["openai.responses.tools"]
    items: list[Json] = []
    for tool in call.body.get("tools") or ():
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if not isinstance(kind, str):
            continue
        kind = "web_search" if kind.startswith("web_search") else kind
        for _ in range(int(counts.get(f"{kind}_call", 0))):
            item_id = f"{kind[:2]}_fake{call.seq:012d}{len(items):04d}"
            item: Json = {"id": item_id, "type": f"{kind}_call", "status": "completed"}
            if kind == "web_search":
                item["action"] = {"type": "search", "query": "fake"}
            elif kind == "file_search":
                item.update(queries=["fake"], results=None)
            elif kind == "code_interpreter":
                item.update(code="print(1)", container_id="cntr_fake", outputs=None)
            elif kind == "image_generation":
                item["result"] = base64.b64encode(IMAGE_PNG).decode("ascii")
            items.append(item)
    return items


def _response(call: _Call, text: str | None) -> Json:
    """The Response object: completed with output and usage when ``text`` is given, else in progress."""
    done = text is not None
    fmt = _dig(call.body, "text", "format") or {"type": "text"}
    return {
        "id": call.id("resp_fake", 40),
        "object": "response",
        "created_at": call.created,
        "status": "completed" if done else "in_progress",
        "completed_at": call.created if done else None,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": call.body.get("instructions"),
        "max_output_tokens": call.body.get("max_output_tokens"),
        "model": reported_model(call.provider, call.model),
        "output": [*_tool_items(call), _response_message(call, text)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": call.body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": fmt},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": _responses_usage() if done else None,
        "user": None,
        "metadata": {},
    }


def _responses(call: _Call) -> _Reply:
    text = _reply_text(call)
    if call.body.get("stream") is not True:
        return _Reply(body=_response(call, text))
    item_id = call.id("msg_fake", 40)
    tools = _tool_items(call)
    at = len(tools)  # the message follows the tool calls
    where = {"item_id": item_id, "output_index": at, "content_index": 0}
    empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    full_part = {**empty_part, "text": text}
    steps: list[tuple[Json, bool]] = [
        ({"type": "response.created", "response": _response(call, None)}, False),
        ({"type": "response.in_progress", "response": _response(call, None)}, False),
        *(
            (step, False)
            for index, tool in enumerate(tools)
            for step in ({"type": "response.output_item.added", "output_index": index, "item": tool},
                         {"type": "response.output_item.done", "output_index": index, "item": tool})
        ),
        ({"type": "response.output_item.added", "output_index": at, "item": _response_message(call, None)}, False),
        ({"type": "response.content_part.added", **where, "part": empty_part}, False),
        *(
            ({"type": "response.output_text.delta", **where, "delta": part, "logprobs": []}, True)
            for part in _split3(text)
        ),
        ({"type": "response.output_text.done", **where, "text": text, "logprobs": []}, False),
        ({"type": "response.content_part.done", **where, "part": full_part}, False),
        ({"type": "response.output_item.done", "output_index": at, "item": _response_message(call, text)}, False),
        ({"type": "response.completed", "response": _response(call, text)}, False),
    ]
    return _Reply(
        events=[
            _sse({**data, "sequence_number": number}, data["type"], content=content)
            for number, (data, content) in enumerate(steps)
        ]
    )


# -- OpenAI, OpenRouter: embeddings


def _embeddings(call: _Call) -> _Reply:
    raw = call.body.get("input")
    # one string or one token array: one vector; several strings or token arrays: one each
    several = isinstance(raw, list) and raw and not all(isinstance(item, int) for item in raw)
    count = len(raw) if several and isinstance(raw, list) else 1
    dimensions = call.body.get("dimensions")
    size = dimensions if isinstance(dimensions, int) and dimensions > 0 else _EMBEDDING_DIMENSIONS
    as_base64 = call.body.get("encoding_format") == "base64"
    data = []
    for index in range(count):
        # multiples of 1/64 survive the float32 round trip of base64 exactly
        vector = [((index + 1) * (j + 1) % 64) / 64 for j in range(size)]
        value: Any = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode("ascii") if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    n = USAGE[f"{call.provider}.embeddings"]
    usage: Json = {"prompt_tokens": n["prompt_tokens"], "total_tokens": n["total_tokens"]}
    answer: Json = {"object": "list", "data": data, "model": call.model, "usage": usage}
    if call.provider == "openrouter":
        usage["cost"] = n["cost"]
        answer["id"] = f"gen-emb-{call.created}-fake{call.seq:012d}"
    return _Reply(body=answer)


# -- OpenAI: images, audio (multipart uploads: form fields arrive as strings)


def _flag(value: Any) -> bool:
    return value is True or value == "true"


def _count(value: Any, default: int) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if type(value) is int and value > 0 else default


def _image_b64() -> str:
    return base64.b64encode(IMAGE_PNG).decode("ascii")


def _image_usage() -> Json:
    n = USAGE["openai.images"]
    return {
        "input_tokens": n["input_tokens"],
        "input_tokens_details": {"text_tokens": n["input_text_tokens"], "image_tokens": n["input_image_tokens"]},
        "output_tokens": n["output_tokens"],
        "output_tokens_details": {"text_tokens": n["output_text_tokens"], "image_tokens": n["output_image_tokens"]},
        "total_tokens": n["total_tokens"],
    }


def _images(call: _Call) -> _Reply:
    """gpt-image answers b64_json with size, quality and usage (`auto` resolved to 1024x1024 and medium);
    DALL-E answers urls (or b64_json when asked) and echoes neither size nor quality, as OpenAI does."""
    body = call.body
    n = _count(body.get("n"), 1)
    if not call.model.startswith("gpt-image"):
        as_b64 = body.get("response_format") == "b64_json"
        data: list[Json] = [
            {"b64_json": _image_b64()} if as_b64 else {"url": f"https://images.fake.invalid/{call.seq}-{i}.png"}
            for i in range(n)
        ]
        if call.model == "dall-e-3":
            for item in data:
                item["revised_prompt"] = str(body.get("prompt", ""))
        return _Reply(body={"created": call.created, "data": data})
    size = body.get("size") if isinstance(body.get("size"), str) and body.get("size") != "auto" else "1024x1024"
    quality = body.get("quality") if body.get("quality") in ("low", "medium", "high") else "medium"
    shape: Json = {"background": "opaque", "output_format": "png", "quality": quality, "size": size}
    if not _flag(body.get("stream")):
        answer: Json = {"created": call.created, "data": [{"b64_json": _image_b64()} for _ in range(n)], **shape,
                        "usage": _image_usage()}
        return _Reply(body=answer)
    kind = "image_edit" if call.endpoint == "edits" else "image_generation"
    partials = min(_count(body.get("partial_images"), 0), 3)
    events: list[_Event] = []
    for _ in range(n):
        for index in range(partials):
            events.append(_sse({"type": f"{kind}.partial_image", "b64_json": _image_b64(), "created_at": call.created,
                                "partial_image_index": index, **shape}, f"{kind}.partial_image", content=True))
        events.append(_sse({"type": f"{kind}.completed", "b64_json": _image_b64(), "created_at": call.created,
                            **shape, "usage": _image_usage()}, f"{kind}.completed", content=True))
    return _Reply(events=events)


def _text_reply(text: str, content_type: str = "text/plain; charset=utf-8") -> _Reply:
    return _Reply(content=text.encode("utf-8"), content_type=content_type)


def _audio_usage(call: _Call) -> Json:
    if call.model.startswith("whisper"):
        return {"type": "duration", "seconds": USAGE["openai.transcriptions.duration"]["seconds"]}
    n = USAGE["openai.transcriptions.tokens"]
    return {"type": "tokens", "input_tokens": n["input_tokens"], "output_tokens": n["output_tokens"],
            "total_tokens": n["total_tokens"],
            "input_token_details": {"audio_tokens": n["audio_tokens"], "text_tokens": n["text_tokens"]}}


def _audio(call: _Call) -> _Reply:
    """Transcriptions and translations in every `response_format`: json (the default), verbose_json
    (whisper only), and text / srt / vtt, which are plain text without usage."""
    body = call.body
    whisper = call.model.startswith("whisper")
    translate = call.endpoint == "translations"
    fmt = body.get("response_format") or "json"
    if translate and not whisper:
        return _error(call.provider, 400, "translations support whisper-1 only", call.seq)
    if not whisper and fmt not in ("json", "text"):
        return _error(call.provider, 400, f"response_format {fmt!r} is not supported with {call.model}", call.seq)
    seconds = USAGE["openai.translations"]["duration"] if translate else \
        USAGE["openai.transcriptions.duration"]["seconds"]
    if _flag(body.get("stream")):
        if whisper:
            return _error(call.provider, 400, "streaming is not supported with whisper-1", call.seq)
        return _Reply(events=[
            *(_sse({"type": "transcript.text.delta", "delta": part}, content=True) for part in REPLY_CHUNKS),
            _sse({"type": "transcript.text.done", "text": REPLY_TEXT, "usage": _audio_usage(call)}),
        ])
    if fmt == "text":
        return _text_reply(REPLY_TEXT + "\n")
    end = f"00:00:{int(seconds):02d}.{round(seconds % 1 * 1000):03d}"
    if fmt == "srt":
        return _text_reply(f"1\n00:00:00,000 --> {end.replace('.', ',')}\n{REPLY_TEXT}\n\n")
    if fmt == "vtt":
        return _text_reply(f"WEBVTT\n\n00:00:00.000 --> {end}\n{REPLY_TEXT}\n\n", "text/vtt; charset=utf-8")
    if fmt == "verbose_json":
        answer: Json = {"task": "translate" if translate else "transcribe", "language": "english",
                        "duration": seconds, "text": REPLY_TEXT, "segments": []}
        if not translate:
            answer["usage"] = _audio_usage(call)
        return _Reply(body=answer)
    return _Reply(body={"text": REPLY_TEXT} if translate else {"text": REPLY_TEXT, "usage": _audio_usage(call)})


_AUDIO_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                "wav": "audio/wav", "pcm": "audio/pcm"}


def _speech(call: _Call) -> _Reply:
    fmt = call.body.get("response_format") or "mp3"
    return _Reply(content=SPEECH_AUDIO, content_type=_AUDIO_TYPES.get(str(fmt), "audio/mpeg"))


# -- Vertex AI: Imagen predict


def _imagen(call: _Call) -> _Reply:
    """`parameters.sampleCount` images (Vertex's default: 4; an upscale makes 1), without usage."""
    parameters = call.body.get("parameters")
    parameters = parameters if isinstance(parameters, Mapping) else {}
    count = 1 if parameters.get("mode") == "upscale" else _count(parameters.get("sampleCount"), 4)
    predictions = [{"bytesBase64Encoded": _image_b64(), "mimeType": "image/png"} for _ in range(count)]
    return _Reply(body={"predictions": predictions})


# -- Anthropic: messages


def _anthropic_usage(output_tokens: int | float) -> Json:
    n = USAGE["anthropic.messages"]
    return {
        "input_tokens": n["input_tokens"],
        "cache_creation_input_tokens": n["cache_creation_input_tokens"],
        "cache_read_input_tokens": n["cache_read_input_tokens"],
        "cache_creation": {
            "ephemeral_5m_input_tokens": n["cache_creation_input_tokens"],
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _anthropic(call: _Call) -> _Reply:
    text = _reply_text(call)
    message: Json = {
        "id": call.id("msg_01fake", 16),
        "type": "message",
        "role": "assistant",
        "model": reported_model("anthropic", call.model),
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(USAGE["anthropic.messages"]["output_tokens"]),
    }
    if call.body.get("stream") is not True:
        return _Reply(body=message)
    start = {**message, "content": [], "stop_reason": None, "usage": _anthropic_usage(1)}
    final_usage = {key: value for key, value in message["usage"].items() if key.endswith("tokens")}
    events = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             "content_block_start"),
        _sse({"type": "ping"}, "ping"),
        *(
            _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}},
                 "content_block_delta", content=True)
            for part in _split3(text)
        ),
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
              "usage": final_usage}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return _Reply(events=events)


# -- Gemini: generateContent


def _gemini_usage(chunk: int = 3) -> Json:
    """usageMetadata as it stands after content chunk ``chunk`` of 3 (3: the final numbers)."""
    n = USAGE["gemini.generateContent"]
    prompt, thoughts = int(n["promptTokenCount"]), int(n["thoughtsTokenCount"])
    candidates = _running(int(n["candidatesTokenCount"]), chunk)
    cached = n["cachedContentTokenCount"]
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "cachedContentTokenCount": cached,
        "thoughtsTokenCount": thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": cached}],
    }


def _gemini(call: _Call) -> _Reply:
    text = _reply_text(call)

    def answer(part: str, chunk: int, finished: bool) -> Json:
        candidate: Json = {"content": {"parts": [{"text": part}], "role": "model"}, "index": 0}
        if finished:
            candidate["finishReason"] = "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": _gemini_usage(chunk),
            "modelVersion": reported_model("gemini", call.model),
            "responseId": call.id("fakeResponse", 12),
        }

    if call.endpoint == "generateContent":
        return _Reply(body=answer(text, 3, True))
    parts = _split3(text)
    return _Reply(
        events=[
            _sse(answer(part, k, k == 3), content=True, newline="\r\n")  # Gemini ends SSE lines with CRLF
            for k, part in enumerate(parts, start=1)
        ]
    )


# -- errors, in each provider's shape

_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                       429: "rate_limit_exceeded"}
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                          529: "overloaded_error"}
_GOOGLE_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
                    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _request_id_header(provider: str, seq: int) -> dict[str, str]:
    """The header each provider names its request id in (the SDKs expose it as ``_request_id``)."""
    if provider == "anthropic":
        return {"request-id": f"req_01fake{seq:016d}"}
    if provider in ("openai", "groq"):
        return {"x-request-id": f"req_fake{seq:024d}"}
    return {}


def _error(provider: str, status: int, message: str, seq: int = 0) -> _Reply:
    if provider == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        request_id = _request_id_header(provider, seq)["request-id"]
        body: Json = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
        return _Reply(status, body)
    if provider in ("gemini", "vertex"):
        status_name = _GOOGLE_STATUSES.get(status, "UNKNOWN")
        return _Reply(status, {"error": {"code": status, "message": message, "status": status_name}})
    if provider == "openrouter":
        return _Reply(status, {"error": {"code": status, "message": message, "metadata": {}}})
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})


# ---------------------------------------------------------------------------- routing

class _Endpoint(NamedTuple):
    provider: str
    name: str  # as in the _Call: "chat", "responses", "embeddings", "messages", "generateContent", ...
    build: Callable[[_Call], _Reply]
    required: tuple[str, ...]  # body fields the provider refuses a request without
    default_model: str = ""  # the model of a request that names none (OpenAI images: dall-e-2)


_ENDPOINTS = {
    "/openai/v1/chat/completions": _Endpoint("openai", "chat", _chat, ("model", "messages")),
    "/openai/v1/responses": _Endpoint("openai", "responses", _responses, ("model",)),
    "/openai/v1/embeddings": _Endpoint("openai", "embeddings", _embeddings, ("model", "input")),
    "/openai/v1/images/generations": _Endpoint("openai", "generations", _images, ("prompt",), "dall-e-2"),
    "/openai/v1/images/edits": _Endpoint("openai", "edits", _images, ("image", "prompt"), "dall-e-2"),
    "/openai/v1/images/variations": _Endpoint("openai", "variations", _images, ("image",), "dall-e-2"),
    "/openai/v1/audio/transcriptions": _Endpoint("openai", "transcriptions", _audio, ("file", "model")),
    "/openai/v1/audio/translations": _Endpoint("openai", "translations", _audio, ("file", "model")),
    "/openai/v1/audio/speech": _Endpoint("openai", "speech", _speech, ("model", "input", "voice")),
    "/openrouter/api/v1/chat/completions": _Endpoint("openrouter", "chat", _chat, ("model", "messages")),
    "/openrouter/api/v1/embeddings": _Endpoint("openrouter", "embeddings", _embeddings, ("model", "input")),
    "/groq/openai/v1/chat/completions": _Endpoint("groq", "chat", _chat, ("model", "messages")),
    "/anthropic/v1/messages": _Endpoint("anthropic", "messages", _anthropic, ("model", "messages", "max_tokens")),
    **{f"/{name}/v1/chat/completions": _Endpoint(name, "chat", _chat, ("model", "messages"))
       for name in ("gateway-same-id", "gateway-cached-above-prompt", "gateway-reasoning-above-completion",
                    "gateway-null-usage")},
}


def _route(path: str) -> tuple[_Endpoint, str] | None:
    """The endpoint at ``path`` and the model named in the path (Gemini), or None."""
    if path in _ENDPOINTS:
        return _ENDPOINTS[path], ""
    azure = _AZURE_PATH.fullmatch(path)
    if azure is not None:  # the deployment name stands for the model
        return _Endpoint("azure", "chat", _chat, ("messages",)), azure.group(1)
    vertex = _VERTEX_PATH.fullmatch(path)
    if vertex is not None:
        return _Endpoint("vertex", "predict", _imagen, ("instances",)), vertex.group(2)
    match = _GEMINI_PATH.fullmatch(path)
    if match is None:
        return None
    return _Endpoint("gemini", match.group(3), _gemini, ("contents",)), match.group(2)


def _form(raw: bytes, content_type: str) -> Json | None:
    """A multipart/form-data body as a dict: text fields as strings, files as ``{"filename", "size"}``;
    a repeated field (``image[]``) becomes a list, under its name without ``[]``. None if malformed."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        return None
    form: Json = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        name = name.removesuffix("[]")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        value: Any = {"filename": filename, "size": len(data)} if filename is not None else \
            data.decode("utf-8", "replace")
        if name in form:
            previous = form[name]
            form[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            form[name] = value
    return form


# ---------------------------------------------------------------------------- server


class FakeLLMServer(LoopbackService):
    """Fake OpenAI, OpenRouter, Groq, Anthropic and Gemini HTTP APIs on loopback, with fixed usage.

    See the module docstring for the endpoints and the meaning of every number in ``USAGE``.
    """

    _thread_name = "openmonetize-fake-llm"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, _Handler)
        self._lock = threading.Lock()
        self._seq = 0
        self._requests: list[RecordedRequest] = []
        self._failures: deque[int] = deque()  # statuses of the next failing requests
        self._cuts: deque[int] = deque()  # content chunks the next streams get before the cut

    def __repr__(self) -> str:
        return f"<FakeLLMServer {self.url if self.running else 'stopped'}>"

    def base_url(self, provider: str) -> str:
        """What to pass as the SDK client's base URL for ``provider``.

        openai / openrouter: ``openai.OpenAI(base_url=...)``; groq: ``groq.Groq(base_url=...)``;
        anthropic: ``anthropic.Anthropic(base_url=...)``; gemini:
        ``genai.Client(http_options=types.HttpOptions(base_url=...))``.
        """
        try:
            return self.url + _PATHS[provider]
        except KeyError:
            raise ValueError(f"unknown provider {provider!r}; one of {sorted(_PATHS)}") from None

    # -- inspection and faults

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to a provider endpoint, failed and refused ones included, in arrival order."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` provider requests with ``status`` and the provider's error body."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        with self._lock:
            self._failures.extend([status] * n)

    def cut_next_stream(self, after_chunks: int = 1) -> None:
        """Make the next streamed answer close its connection after ``after_chunks`` content chunks.

        No final chunk, usage or end event is sent and the chunked body is left unterminated,
        so the SDK raises while iterating. Non-streamed requests do not consume it.
        """
        if not 0 <= after_chunks <= len(REPLY_CHUNKS):
            raise ValueError(f"after_chunks must be between 0 and {len(REPLY_CHUNKS)}")
        with self._lock:
            self._cuts.append(after_chunks)

    def reset(self) -> None:
        """Forget recorded requests and pending faults (ids keep counting up)."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            self._cuts.clear()

    # -- request handling (called from handler threads)

    def _answer(self, method: str, target: str, raw: bytes, content_type: str = "") -> tuple[_Reply, int | None]:
        """The reply, and how many content chunks to send before cutting it (None: send it all)."""
        path, _, query = target.partition("?")
        found = _route(path)
        if found is None:
            provider = next((p for p, prefix in _PATHS.items() if path.startswith(prefix + "/")), "openai")
            return _error(provider, 404, f"no fake endpoint at {method} {path[:200]}"), None
        endpoint, path_model = found
        provider = endpoint.provider
        if method != "POST":
            return _error(provider, 405, f"{path} only accepts POST"), None
        if content_type.lower().startswith("multipart/form-data"):
            parsed: Any = _form(raw, content_type)
        else:
            try:
                parsed = json.loads(raw) if raw.strip() else {}
            except ValueError:  # includes UnicodeDecodeError
                parsed = None
        body: Json = parsed if isinstance(parsed, dict) else {}
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._requests.append(RecordedRequest(provider, path, query, body))
            failure = self._failures.popleft() if self._failures else None
        reply, cut = self._build(endpoint, path_model, parsed, seq, failure)
        return replace(reply, headers={**_request_id_header(provider, seq), **reply.headers}), cut

    def _build(
        self, endpoint: _Endpoint, path_model: str, parsed: Any, seq: int, failure: int | None
    ) -> tuple[_Reply, int | None]:
        """The queued failure, a refusal of a malformed request, or the endpoint's answer."""
        provider = endpoint.provider
        if failure is not None:
            return _error(provider, failure, f"fake {failure} injected by FakeLLMServer.fail_next", seq), None
        if not isinstance(parsed, dict):
            return _error(provider, 400, "the body is not a JSON object (or a multipart form)", seq), None
        missing = [name for name in endpoint.required if name not in parsed]
        if missing:
            return _error(provider, 400, f"missing required field(s): {', '.join(missing)}", seq), None
        model = path_model or parsed.get("model", endpoint.default_model)
        if not isinstance(model, str):
            return _error(provider, 400, "model must be a string", seq), None
        reply = endpoint.build(_Call(provider, endpoint.name, model, parsed, seq, int(time.time())))
        cut = None
        if reply.body is None and reply.content is None:
            with self._lock:
                cut = self._cuts.popleft() if self._cuts else None
        return reply, cut


# ---------------------------------------------------------------------------- HTTP


class _Handler(TrackedHandler):
    """HTTP plumbing only: read the body, write a JSON answer or a chunked event stream."""

    server: LoopbackHTTPServer[FakeLLMServer]

    server_version = "FakeLLM/1"

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_json(_error("openai", 411, "send the body with a Content-Length"))
            return
        length = self.headers.get("Content-Length", "0").strip()
        if not (length.isascii() and length.isdigit()):
            self.close_connection = True
            self._send_json(_error("openai", 400, "invalid Content-Length"))
            return
        raw = self.rfile.read(int(length))
        try:
            reply, cut = self.server.app._answer(self.command, self.path, raw, self.headers.get("Content-Type", ""))
        except Exception:
            logger.exception("fake LLM server failed on %s %s", self.command, self.path)
            reply, cut = _error("openai", 500, "the fake LLM server failed; see its log"), None
        if reply.content is not None:
            self._send_content(reply)
        elif reply.body is None:
            self._send_stream(reply, cut)
        else:
            self._send_json(reply)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def _send_json(self, reply: _Reply) -> None:
        data = _dumps(reply.body)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_content(self, reply: _Reply) -> None:
        assert reply.content is not None
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.content)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.content)

    def _send_stream(self, reply: _Reply, cut: int | None) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        out: list[bytes] = []
        sent = 0
        for event in reply.events:
            if cut is not None and sent == cut and (event.content or sent > 0):
                break
            out.append(b"%x\r\n%s\r\n" % (len(event.data), event.data))
            sent += event.content
        if cut is None:
            out.append(b"0\r\n\r\n")
        else:
            self.close_connection = True  # the body stays unterminated: the client sees it cut short
        self.wfile.write(b"".join(out))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Called by http.server for framing problems (bad request line, huge headers, ...).
        self.close_connection = True
        self._send_json(_error("openai", code, message or HTTPStatus(code).phrase))

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):  # called for every request: format only when shown
            logger.debug("%s %s", self.address_string(), format % args)
