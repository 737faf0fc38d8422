"""LiteLLM: `tracker.wrap(client=litellm)` wraps the module itself, and each call is billed under the provider
LiteLLM routed it to.

LiteLLM answers in OpenAI's shapes whatever the provider (`ModelResponse`, `EmbeddingResponse`,
`ImageResponse`), with token counts already normalised (Anthropic's cache reads and writes are inside
`prompt_tokens`), so the readers here only add what LiteLLM knows beyond the counts: the provider
(`_hidden_params["custom_llm_provider"]`) and its computed cost (`_hidden_params["response_cost"]`). The
litellm package is never imported here: a wrap already holds the imported module, and what is needed at
call time is taken from `sys.modules`.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Mapping
from typing import Any

from openmonetize.lib.llm import usage as u
from openmonetize.lib.llm.routes import Method, Routes

MODULE = "litellm"

#: LiteLLM's provider names that denote the same API as a name the tracker records for a native client,
#: so one call costs the same whichever way it is made; every other name is recorded as LiteLLM gives it
PROVIDER_NAMES = {
    "gemini": "google",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "dashscope": "alibaba",
}


def is_litellm(client: Any) -> bool:
    return isinstance(client, types.ModuleType) and client.__name__ == MODULE


class _NoTokens(u.Usage):
    """An image answer without token usage (DALL-E) that still has LiteLLM's cost to keep: no token keys."""

    def as_metadata(self) -> u.Metadata:
        return {}


def _hidden(obj: Any) -> Mapping[str, Any]:
    # read from pydantic's private storage: the attribute lookup costs microseconds per response
    private = getattr(obj, "__pydantic_private__", None)
    hidden = private.get("_hidden_params") if isinstance(private, dict) else getattr(obj, "_hidden_params", None)
    return hidden if isinstance(hidden, Mapping) else {}


def _name(provider: Any) -> str | None:
    if not isinstance(provider, str) or not provider:
        return None
    return PROVIDER_NAMES.get(provider, provider)


def provider_of_request(request: u.Request) -> str | None:
    """What LiteLLM resolves the request's `model` to (`openai/gpt-4o` -> `openai`), for answers that do not say."""
    model, custom, api_base = request.get("model"), request.get("custom_llm_provider"), request.get("api_base")
    if not isinstance(model, str) or not isinstance(custom, (str, type(None))) \
            or not isinstance(api_base, (str, type(None))):
        return None
    return _resolve(model, custom, api_base)


@functools.lru_cache(maxsize=512)
def _resolve(model: str, custom: str | None, api_base: str | None) -> str | None:
    """`get_llm_provider` parses the model name on every call and answers the same for the same arguments:
    kept per process."""
    module = sys.modules.get(MODULE)
    if module is None:
        return None
    try:
        _, provider, _, _ = module.get_llm_provider(
            model=model, custom_llm_provider=custom, api_base=api_base)
    except Exception:  # LiteLLM raises for a model it cannot route; the call itself would have failed
        return None
    return _name(provider)


def _cost(hidden: Mapping[str, Any], usage: Any = None) -> float | None:
    cost = hidden.get("response_cost")
    if cost is None and usage is not None:
        cost = u.field_of(usage, "cost")  # the usage chunk of a stream carries it there
    return cost if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None


def _tokens(usage: Any, hidden: Mapping[str, Any]) -> u.Usage:
    """OpenAI's chat fields (LiteLLM already folds Anthropic's cache reads and writes into `prompt_tokens`)."""
    tokens = u.openai_chat_usage(usage)
    written = u.field_of(usage, "cache_creation_input_tokens")
    if type(written) is int and written:
        tokens.extra["cache_creation_input_tokens"] = written
    cost = _cost(hidden, usage)
    if cost is not None:
        tokens.extra["cost"] = cost
    else:
        tokens.extra.pop("cost", None)
    return tokens


def _model(response: Any, hidden: Mapping[str, Any]) -> str | None:
    """The provider's model name when LiteLLM kept it (streams report the requested name)."""
    model = hidden.get("provider_response_model") or getattr(response, "model", None)
    return model if isinstance(model, str) and model else None


def read_completion(response: Any, request: u.Request = u.NO_REQUEST) -> u.Observation:
    hidden = _hidden(response)
    usage = getattr(response, "usage", None)
    response_id = getattr(response, "id", None)
    return u.Observation(
        usage=_tokens(usage, hidden) if usage is not None else None,
        model=_model(response, hidden),
        response_id=response_id if isinstance(response_id, str) else None,
        provider=_name(hidden.get("custom_llm_provider")) or provider_of_request(request),
    )


def read_embedding(response: Any, request: u.Request = u.NO_REQUEST) -> u.Observation:
    hidden = _hidden(response)
    usage = getattr(response, "usage", None)
    tokens = None
    if usage is not None:
        tokens = u.Usage(input_tokens=u._int(getattr(usage, "prompt_tokens", 0)))
        cost = _cost(hidden)
        if cost is not None:
            tokens.extra["cost"] = cost
    return u.Observation(usage=tokens, model=_model(response, hidden),
                         provider=_name(hidden.get("custom_llm_provider")) or provider_of_request(request))


def _provider_and_model(response: Any, hidden: Mapping[str, Any], request: u.Request) -> tuple[str | None, str | None]:
    """For answers that name no model (images, audio): the requested one, without LiteLLM's `provider/` prefix."""
    raw = hidden.get("custom_llm_provider")
    provider = _name(raw) or provider_of_request(request)
    model = _model(response, hidden)
    requested = request.get("model")
    if model is None and isinstance(requested, str):
        prefix = raw if isinstance(raw, str) and raw else requested.partition("/")[0]
        model = requested[len(prefix) + 1:] if requested.startswith(prefix + "/") else requested
    return provider, model or None


def _cost_only(hidden: Mapping[str, Any]) -> u.Usage | None:
    cost = _cost(hidden)
    return _NoTokens(extra={"cost": cost}) if cost is not None else None


def read_image(response: Any, request: u.Request = u.NO_REQUEST) -> u.Observation:
    """`ImageResponse`: one event for the images returned; size and quality as answered, else as requested.

    LiteLLM gives every image answer a `usage`, all zeros when the provider reported none (DALL-E): only
    counts that are there are kept (gpt-image models report tokens).
    """
    hidden = _hidden(response)
    data = getattr(response, "data", None)
    size = getattr(response, "size", None) or request.get("size")
    quality = getattr(response, "quality", None) or request.get("quality")
    usage = getattr(response, "usage", None)
    tokens = _cost_only(hidden)
    if usage is not None:
        input_tokens = u._int(getattr(usage, "input_tokens", 0)) or u._int(getattr(usage, "prompt_tokens", 0))
        output_tokens = u._int(getattr(usage, "output_tokens", 0)) or u._int(getattr(usage, "completion_tokens", 0))
        if input_tokens or output_tokens:
            tokens = u.Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                             extra=tokens.extra if tokens is not None else {})
    provider, model = _provider_and_model(response, hidden, request)
    return u.Observation(
        usage=tokens, model=model, provider=provider,
        images=u.Images(len(data) if isinstance(data, list) else 0,
                        size if isinstance(size, str) else None, quality if isinstance(quality, str) else None),
    )


def read_transcription(response: Any, request: u.Request = u.NO_REQUEST) -> u.Observation:
    """`TranscriptionResponse`: seconds of audio (whisper's `usage.type == "duration"`), or tokens."""
    hidden = _hidden(response)
    provider, model = _provider_and_model(response, hidden, request)
    usage = getattr(response, "usage", None)
    cost = _cost_only(hidden)
    if getattr(usage, "type", None) == "tokens":
        tokens = u.Usage(input_tokens=u._int(getattr(usage, "input_tokens", 0)),
                         output_tokens=u._int(getattr(usage, "output_tokens", 0)),
                         extra=cost.extra if cost is not None else {})
        return u.Observation(usage=tokens, model=model, provider=provider)
    seconds = getattr(usage, "seconds", None)
    if seconds is None:
        seconds = getattr(response, "duration", None)  # verbose_json answers without usage
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return u.Observation(usage=cost, model=model, provider=provider)  # nothing to bill by: flagged no_usage
    return u.Observation(usage=cost, model=model, provider=provider, units=u.Units("audio_seconds", seconds))


def read_speech(response: Any, request: u.Request = u.NO_REQUEST) -> u.Observation:
    """Text to speech returns audio bytes: billed per input character (tts-1's price unit)."""
    hidden = _hidden(response)
    provider, model = _provider_and_model(response, hidden, request)
    text = request.get("input")
    return u.Observation(usage=_cost_only(hidden), model=model, provider=provider,
                         units=u.Units("characters", len(text) if isinstance(text, str) else 0))


class CompletionTally(u.Tally):
    """LiteLLM's chunks (`ModelResponseStream`): usage in the chunk LiteLLM sends after the last one when asked.

    That chunk has `choices=[]` when the caller asked for usage, and `choices=[{delta: {}}]` on other paths
    (BerriAI/litellm #28735), so it is found by its `usage` and hidden only when it carries nothing else.
    """

    def __init__(self, hide_usage_chunk: bool) -> None:
        super().__init__()
        self.hide_usage_chunk = hide_usage_chunk

    def begin(self, stream: Any, request: u.Request) -> None:
        """At call time: the provider the stream was opened with (chunks name it too, and win)."""
        self.seen.provider = _name(getattr(stream, "custom_llm_provider", None)) or provider_of_request(request)

    def observe(self, item: Any) -> bool:
        self._meet(item)
        hidden = _hidden(item)
        provider = _name(hidden.get("custom_llm_provider"))
        if provider is not None:
            self.seen.provider = provider
        model = hidden.get("provider_response_model")
        if isinstance(model, str) and model:
            self.seen.model = model
        usage = getattr(item, "usage", None)
        if usage is None:
            return False
        self.seen.usage = _tokens(usage, hidden)
        self.complete = True
        return self.hide_usage_chunk and _only_usage(item)


def _only_usage(chunk: Any) -> bool:
    """A chunk with no content, tool call, role or finish reason in any choice: there only for its usage."""
    for choice in getattr(chunk, "choices", None) or ():
        if getattr(choice, "finish_reason", None) is not None:
            return False
        delta = getattr(choice, "delta", None)
        if delta is not None and any(getattr(delta, name, None)
                                     for name in ("content", "tool_calls", "function_call", "role", "audio",
                                                  "reasoning_content", "thinking_blocks", "refusal")):
            return False
    return True


_COMPLETION = Method("when_asked", read_completion, lambda hide: CompletionTally(hide), asks_for_usage=True)
_EMBEDDING = Method("never", read_embedding)
_IMAGE = Method("never", read_image)
_TRANSCRIPTION = Method("never", read_transcription)
_SPEECH = Method("never", read_speech)

ROUTES: Routes = {
    "completion": _COMPLETION, "acompletion": _COMPLETION,
    "embedding": _EMBEDDING, "aembedding": _EMBEDDING,
    "image_generation": _IMAGE, "aimage_generation": _IMAGE,
    "transcription": _TRANSCRIPTION, "atranscription": _TRANSCRIPTION,
    "speech": _SPEECH, "aspeech": _SPEECH,
}
