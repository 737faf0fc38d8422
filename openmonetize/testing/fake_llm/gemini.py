"""Gemini generateContent (streamed or not) and Vertex AI's Imagen predict.

- Vertex predict: ``parameters.sampleCount`` images (default 4; 1 for ``mode: upscale``) as
  ``predictions: [{bytesBase64Encoded, mimeType}]``, no usage, as Vertex answers.
"""

from __future__ import annotations

from collections.abc import Mapping

from .replies import Json, _Call, _count, _image_b64, _Reply, _reply_text, _running, _split3, _sse, reported_model
from .usage import USAGE

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


# -- Vertex AI: Imagen predict


def _imagen(call: _Call) -> _Reply:
    """`parameters.sampleCount` images (Vertex's default: 4; an upscale makes 1), without usage."""
    parameters = call.body.get("parameters")
    parameters = parameters if isinstance(parameters, Mapping) else {}
    count = 1 if parameters.get("mode") == "upscale" else _count(parameters.get("sampleCount"), 4)
    predictions = [{"bytesBase64Encoded": _image_b64(), "mimeType": "image/png"} for _ in range(count)]
    return _Reply(body={"predictions": predictions})

