"""Anthropic messages, streamed or not (the usage module says how Anthropic counts)."""

from __future__ import annotations

from .replies import Json, _Call, _Reply, _reply_text, _split3, _sse, reported_model
from .usage import USAGE


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

