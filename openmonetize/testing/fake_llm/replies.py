"""What every provider's answer is built from: the request as the builders see it, the reply, SSE events,
the reply text and the model name an answer reports."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .schema import _schema_text
from .usage import IMAGE_PNG, REPLY_CHUNKS, REPLY_TEXT

Json = dict[str, Any]

_MODEL_DATES = {"openai": "-2024-08-06", "anthropic": "-20251001"}
_DATED = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


def reported_model(provider: str, requested: str) -> str:
    """The model name a generation answer reports for ``requested`` (embeddings echo it unchanged)."""
    suffix = _MODEL_DATES.get(provider)
    if suffix is None or _DATED.search(requested):
        return requested
    return requested + suffix


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


def _flag(value: Any) -> bool:
    return value is True or value == "true"


def _count(value: Any, default: int) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if type(value) is int and value > 0 else default


def _image_b64() -> str:
    return base64.b64encode(IMAGE_PNG).decode("ascii")


