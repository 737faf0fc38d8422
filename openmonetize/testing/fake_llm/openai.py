"""OpenAI's endpoints, and the OpenAI-shaped ones: OpenRouter, Groq, Azure and the gateways (chat, Responses,
embeddings, images, audio).

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
- Responses built-in tools: for each ``tools`` entry of type ``web_search*``, ``file_search``,
  ``code_interpreter`` or ``image_generation``, the ``output`` starts with the number of
  ``*_call`` items given in ``USAGE["openai.responses.tools"]`` (streams: in ``response.completed``
  and their own ``output_item`` events); function tools get none.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

from .errors import _error
from .replies import (
    Json,
    _Call,
    _count,
    _dig,
    _Event,
    _flag,
    _image_b64,
    _Reply,
    _reply_text,
    _split3,
    _sse,
    reported_model,
)
from .schema import _schema_text
from .usage import IMAGE_PNG, REPLY_CHUNKS, REPLY_TEXT, SPEECH_AUDIO, USAGE

_OPENROUTER_VENDORS = {"openai": "OpenAI", "anthropic": "Anthropic", "google": "Google", "meta-llama": "Meta"}
_EMBEDDING_DIMENSIONS = 8


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
