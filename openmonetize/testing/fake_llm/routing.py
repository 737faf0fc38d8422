"""Which builder answers a path: the providers' base paths and every endpoint under them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from .anthropic import _anthropic
from .gemini import _gemini, _imagen
from .openai import _audio, _chat, _embeddings, _images, _responses, _speech
from .replies import _Call, _Reply

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
_GEMINI_PATH = re.compile(r"/gemini/(v1[a-z0-9]*)/models/([^/:]+):(generateContent|streamGenerateContent)")
# Vertex AI: express mode (API key) or a project's path
_VERTEX_PATH = re.compile(
    r"/vertex/(v1[a-z0-9]*)/(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/([^/:]+):predict")


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

