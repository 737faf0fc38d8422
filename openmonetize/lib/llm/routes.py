"""Which methods of which provider client are billed, and how each one answers.

A route table mirrors the client's attribute tree (`chat` -> `completions` -> `create`); everything not
in it passes through the wrapper untouched. Providers are recognised by the client's module, so no
provider SDK is imported here.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Union
from urllib.parse import urlsplit

from openmonetize.lib.llm import usage as u

Streams = Literal["never", "when_asked", "always", "manager"]


@dataclass(frozen=True)
class Method:
    """How a tracked method answers and where its usage is."""

    #: "never": returns the response; "when_asked": a stream when called with stream=True; "always": a
    #: stream (Gemini's `*_stream`); "manager": a context manager over a stream (the SDKs' `.stream()`)
    streams: Streams
    #: reads the response, given the call's keyword arguments (for what the response does not echo)
    read: Callable[[Any, u.Request], u.Observation] | None = None
    tally: Callable[[bool], u.Tally] | None = None
    snapshot: Callable[[Any], tuple[u.Observation, bool]] | None = None
    #: OpenAI chat streams carry usage only when asked with stream_options.include_usage
    asks_for_usage: bool = False
    #: reached through `with_raw_response` / `with_streaming_response`: the usage is read when the
    #: caller parses the raw response
    raw: bool = False
    #: the answer is binary (TTS audio) that callers read without `.parse()` (`stream_to_file`,
    #: `iter_bytes`): a raw view records as soon as the successful response arrives, from the request
    binary: bool = False
    #: `read`'s usual answer for a plain (not streamed) call, when it is nothing but token counts, read
    #: without its objects (`Recording.record_counts`); None: `read` reads that answer
    counts: Callable[[Any], u.PlainCounts | None] | None = None


Routes = dict[str, Union["Routes", Method]]


def _with_raw(resource: Routes) -> Routes:
    """Add the SDKs' raw-response views of a resource's tracked methods (Stainless-generated SDKs)."""
    raw: Routes = {name: replace(m, raw=True) for name, m in resource.items()
                   if isinstance(m, Method) and m.streams in ("never", "when_asked")}
    return {**resource, "with_raw_response": raw, "with_streaming_response": raw}

#: the client methods that return a new client of the same kind (`with_options(timeout=...)`)
CLIENT_COPIES = frozenset({"with_options", "copy"})

CHAT_CREATE = Method("when_asked", u.read_openai_chat, lambda hide: u.ChatChunkTally(hide), asks_for_usage=True,
                     counts=u.read_openai_chat_counts)
_CHAT_PARSE = Method("never", u.read_openai_chat, counts=u.read_openai_chat_counts)
_CHAT_STREAM = Method("manager", tally=lambda hide: u.ChatHelperTally(hide), snapshot=u.read_chat_helper_snapshot,
                      asks_for_usage=True)
_OPENAI_CHAT: Routes = {"completions": _with_raw({"create": CHAT_CREATE, "parse": _CHAT_PARSE, "stream": _CHAT_STREAM})}
_RESPONSES: Routes = _with_raw({
    "create": Method("when_asked", u.read_openai_responses, lambda hide: u.ResponsesTally()),
    "parse": Method("never", u.read_openai_responses),
})
# gpt-image models stream with stream=True (`images.generate`, `images.edit`); variations are DALL-E 2 only
_IMAGE_CALL = Method("when_asked", u.read_openai_images, lambda hide: u.ImageStreamTally())
_AUDIO: Routes = {
    "transcriptions": _with_raw({
        "create": Method("when_asked", u.read_openai_transcription, lambda hide: u.TranscriptionTally()),
    }),
    "translations": _with_raw({"create": Method("never", u.read_openai_transcription)}),
    "speech": _with_raw({"create": Method("never", u.read_openai_speech, binary=True)}),
}
OPENAI: Routes = {
    "chat": _OPENAI_CHAT,
    "responses": _RESPONSES,
    "embeddings": _with_raw({"create": Method("never", u.read_openai_embeddings)}),
    "images": _with_raw({
        "generate": _IMAGE_CALL, "edit": _IMAGE_CALL, "create_variation": Method("never", u.read_openai_images),
    }),
    "audio": _AUDIO,
    "beta": {"chat": _OPENAI_CHAT},
}

# Groq reports stream usage in the last chunk's `x_groq` without being asked
_GROQ_CREATE = Method("when_asked", u.read_openai_chat, lambda hide: u.ChatChunkTally(hide, groq=True))
GROQ: Routes = {"chat": {"completions": _with_raw({"create": _GROQ_CREATE})}}

_MESSAGES: Routes = _with_raw({
    "create": Method("when_asked", u.read_anthropic_message, lambda hide: u.AnthropicTally()),
    "parse": Method("never", u.read_anthropic_message),
    "stream": Method("manager", snapshot=u.read_anthropic_helper_snapshot),
})
ANTHROPIC: Routes = {"messages": _MESSAGES, "beta": {"messages": _MESSAGES}}

_IMAGEN = Method("never", u.read_imagen)  # Vertex AI clients only (google-genai refuses them elsewhere)
_MODELS: Routes = {
    "generate_content": Method("never", u.read_gemini),
    "generate_content_stream": Method("always", tally=lambda hide: u.GeminiTally()),
    "generate_images": _IMAGEN,
    "edit_image": _IMAGEN,
    "upscale_image": _IMAGEN,
}
GEMINI: Routes = {"models": _MODELS, "aio": {"models": _MODELS}}

_BY_PROVIDER: dict[str, Routes] = {
    "openai": OPENAI, "openrouter": OPENAI, "groq": GROQ, "anthropic": ANTHROPIC, "google": GEMINI,
}
SUPPORTED = "openai.OpenAI/AsyncOpenAI (also OpenRouter), anthropic.Anthropic/AsyncAnthropic, google.genai.Client, " \
            "groq.Groq/AsyncGroq, the litellm module"


#: OpenAI-compatible APIs reached with the OpenAI client, recognised by the host of its base URL
OPENAI_COMPATIBLE_HOSTS = {
    "openrouter.ai": "openrouter",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "xai",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "api.fireworks.ai": "fireworks",
    "api.mistral.ai": "mistral",
    "api.groq.com": "groq",
    "generativelanguage.googleapis.com": "google",
    "api.perplexity.ai": "perplexity",
    "api.cerebras.ai": "cerebras",
    "api.deepinfra.com": "deepinfra",
    "api.moonshot.ai": "moonshot",
    "dashscope.aliyuncs.com": "alibaba",
    "dashscope-intl.aliyuncs.com": "alibaba",
    "api.sambanova.ai": "sambanova",
    "api.hyperbolic.xyz": "hyperbolic",
    "api.novita.ai": "novita",
    "api.anthropic.com": "anthropic",  # Anthropic's OpenAI SDK compatibility endpoint
}
#: hosts matched by their suffix (one per customer resource)
_OPENAI_COMPATIBLE_SUFFIXES = (
    (".openai.azure.com", "azure"), (".services.ai.azure.com", "azure"), (".cognitiveservices.azure.com", "azure"),
)


def describe(client: Any) -> str:
    """How an unsupported client is named in wrap's TypeError (a module by its name, else its class)."""
    if isinstance(client, types.ModuleType):
        return f"module {client.__name__}"
    return f"{type(client).__module__}.{type(client).__qualname__}"


def detect_provider(client: Any) -> str | None:
    """The provider name recorded on events, from the client's package, class and base URL.

    The OpenAI client is used for many OpenAI-compatible APIs: `AzureOpenAI` is `azure`, a known host
    (`OPENAI_COMPATIBLE_HOSTS`) names its provider, and any other base URL stays `openai` (pass
    `provider=` to `wrap` for a gateway of your own).
    """
    if isinstance(client, types.ModuleType):  # LiteLLM is a module; each call names its own provider
        return "litellm" if client.__name__ == "litellm" else None
    cls = type(client)
    package = cls.__module__.partition(".")[0]
    if package == "openai":
        if cls.__name__ in ("AzureOpenAI", "AsyncAzureOpenAI"):
            return "azure"
        return provider_from_url(str(getattr(client, "base_url", ""))) or "openai"
    if package == "google" and cls.__module__.startswith("google.genai"):
        return "google"
    return package if package in ("anthropic", "groq") else None


def provider_from_url(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    host = host.lower().rstrip(".")
    if host in OPENAI_COMPATIBLE_HOSTS:
        return OPENAI_COMPATIBLE_HOSTS[host]
    for suffix, provider in _OPENAI_COMPATIBLE_SUFFIXES:
        if host.endswith(suffix):
            return provider
    return "openrouter" if "openrouter" in url else None


def routes_for(provider: str, client: Any) -> Routes | None:
    """The route table for the client's own package (the provider name only picks among compatible ones)."""
    if isinstance(client, types.ModuleType):
        from openmonetize.lib.llm import litellm  # our module (it imports this one); never the litellm package

        return litellm.ROUTES if litellm.is_litellm(client) else None
    package = type(client).__module__.partition(".")[0]
    if package == "openai":
        return OPENAI
    if package == "groq":
        return GROQ
    if package == "anthropic":
        return ANTHROPIC
    if package == "google" and type(client).__module__.startswith("google.genai"):
        return GEMINI
    return _BY_PROVIDER.get(provider)
