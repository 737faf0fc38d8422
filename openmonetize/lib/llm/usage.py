"""Reading token usage out of provider responses and streams.

Everything here is duck-typed on the providers' response objects (pydantic models in every SDK), so the
provider SDKs stay optional imports. The accounting rules are the table in `docs/guides/llm.md`:

- output includes reasoning/thinking tokens (OpenAI and Anthropic already count them inside their
  output; Gemini's `thoughts_token_count` is separate and is added);
- Anthropic input is input + cache creation + cache read, and the cache read is `cached_input_tokens`;
- stream usage is read where each provider puts it and is never summed: OpenAI's usage-only final chunk,
  Groq's `x_groq.usage`, the Responses `response.completed` event, Anthropic's cumulative
  `message_delta`, Gemini's running totals (the last one wins).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, SimpleNamespace
from typing import Any

Metadata = dict[str, Any]
#: the keyword arguments of the call, for what a response does not echo (DALL-E's size, TTS input)
Request = Mapping[str, Any]
NO_REQUEST: Request = MappingProxyType({})


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    #: provider facts worth keeping beside the counts (OpenRouter's cost, Anthropic's cache writes, token
    #: kinds without a field of their own); documented metadata keys
    extra: Metadata = field(default_factory=dict)

    def consistent(self) -> tuple[dict[str, int | None], str]:
        """The counts as an event's fields, made consistent, and what was adjusted ('' if nothing).

        A paid call is always recorded: a gateway that reports a part larger than its whole (cached above
        input, reasoning above output) or a negative count gets the part capped at the whole (the totals
        are what the provider charged) and the event flagged, instead of an event that breaks its rules.
        """
        counts: dict[str, int | None] = {
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens, "reasoning_tokens": self.reasoning_tokens,
        }
        notes = []
        for name, value in counts.items():
            if value is not None and value < 0:
                notes.append(f"{name}={value} is negative: recorded as 0")
                counts[name] = 0
        for part, whole in (("cached_input_tokens", "input_tokens"), ("reasoning_tokens", "output_tokens")):
            part_value, whole_value = counts[part], counts[whole]
            if part_value is not None and whole_value is not None and part_value > whole_value:
                notes.append(f"{part}={part_value} exceeds {whole}={whole_value}: recorded as {whole_value}")
                counts[part] = whole_value
        return counts, "; ".join(notes)

    def as_metadata(self) -> Metadata:
        """The counts as metadata keys, for events whose type has no token fields (gpt-image's usage)."""
        out: Metadata = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.cached_input_tokens is not None:
            out["cached_input_tokens"] = self.cached_input_tokens
        return out


@dataclass(frozen=True)
class Images:
    """An image call's billing: how many images it returned, at what size and quality."""

    count: int
    size: str | None = None
    quality: str | None = None


@dataclass(frozen=True)
class Units:
    """A call billed in some other unit (`audio_seconds`, `characters`): a `CustomEvent`."""

    unit_type: str
    quantity: int | float


@dataclass
class Observation:
    """What one call produced, as far as billing is concerned: tokens (`usage`), images, or other units."""

    usage: Usage | None = None
    model: str | None = None
    response_id: str | None = None
    images: Images | None = None
    units: Units | None = None
    #: the provider that served the call when the wrapped client routes (LiteLLM), else the wrap's
    provider: str | None = None


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _opt_int(value: Any) -> int | None:
    return value if type(value) is int else None


# -- final objects ----------------------------------------------------------------------------------


def openai_chat_usage(usage: Any) -> Usage:
    """Chat Completions (also Groq, OpenRouter, any OpenAI-compatible server)."""
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    extra: Metadata = {}
    unknown = getattr(usage, "__pydantic_extra__", None)  # the fields the SDK's model does not declare
    cost = unknown.get("cost") if unknown else None  # OpenRouter's
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        extra["cost"] = cost
    return Usage(
        input_tokens=_int(getattr(usage, "prompt_tokens", 0)),
        output_tokens=_int(getattr(usage, "completion_tokens", 0)),
        cached_input_tokens=_opt_int(getattr(prompt_details, "cached_tokens", None)),
        reasoning_tokens=_opt_int(getattr(completion_details, "reasoning_tokens", None)),
        extra=extra,
    )


def openai_responses_usage(usage: Any) -> Usage:
    return Usage(
        input_tokens=_int(getattr(usage, "input_tokens", 0)),
        output_tokens=_int(getattr(usage, "output_tokens", 0)),
        cached_input_tokens=_opt_int(getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", None)),
        reasoning_tokens=_opt_int(
            getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", None)),
    )


def anthropic_usage(usage: Any) -> Usage:
    """Anthropic reports cache writes and reads beside `input_tokens`, not inside it."""
    base = _int(getattr(usage, "input_tokens", 0))
    written = _int(getattr(usage, "cache_creation_input_tokens", None))
    read = _int(getattr(usage, "cache_read_input_tokens", None))
    extra: Metadata = {"cache_creation_input_tokens": written} if written else {}
    return Usage(
        input_tokens=base + written + read,
        output_tokens=_int(getattr(usage, "output_tokens", 0)),
        cached_input_tokens=read if read else None,
        extra=extra,
    )


def gemini_usage(meta: Any) -> Usage:
    """Gemini counts thinking (`thoughts_token_count`) and tool-use prompts outside its two main counts."""
    thoughts = _opt_int(getattr(meta, "thoughts_token_count", None))
    return Usage(
        input_tokens=_int(getattr(meta, "prompt_token_count", 0))
        + _int(getattr(meta, "tool_use_prompt_token_count", None)),
        output_tokens=_int(getattr(meta, "candidates_token_count", 0)) + (thoughts or 0),
        cached_input_tokens=_opt_int(getattr(meta, "cached_content_token_count", None)),
        reasoning_tokens=thoughts,
    )


def _observe(response: Any, usage: Usage | None, model_attr: str = "model", id_attr: str = "id") -> Observation:
    model = getattr(response, model_attr, None)
    response_id = getattr(response, id_attr, None)
    return Observation(usage, model if isinstance(model, str) else None,
                       response_id if isinstance(response_id, str) else None)


def read_openai_chat(response: Any, request: Request = NO_REQUEST) -> Observation:
    usage = getattr(response, "usage", None)
    return _observe(response, openai_chat_usage(usage) if usage is not None else None)


def read_openai_responses(response: Any, request: Request = NO_REQUEST) -> Observation:
    usage = getattr(response, "usage", None)
    return _observe(response, openai_responses_usage(usage) if usage is not None else None)


def read_openai_embeddings(response: Any, request: Request = NO_REQUEST) -> Observation:
    usage = getattr(response, "usage", None)
    model = getattr(response, "model", None)
    return Observation(Usage(input_tokens=_int(getattr(usage, "prompt_tokens", 0))) if usage is not None else None,
                       model if isinstance(model, str) else None)


def read_anthropic_message(message: Any, request: Request = NO_REQUEST) -> Observation:
    usage = getattr(message, "usage", None)
    return _observe(message, anthropic_usage(usage) if usage is not None else None)


def read_gemini(response: Any, request: Request = NO_REQUEST) -> Observation:
    meta = getattr(response, "usage_metadata", None)
    return _observe(response, gemini_usage(meta) if meta is not None else None,
                    model_attr="model_version", id_attr="response_id")


# -- streams: one tally per stream, fed every item the caller (or the SDK's helper) pulls -----------------


class Tally:
    """Accumulates what a stream has shown so far; `observe` returns True for items to hide from the caller."""

    def __init__(self) -> None:
        self.seen = Observation()
        self.complete = False  # the provider's final usage arrived
        self.items = 0  # how many stream items arrived

    def observe(self, item: Any) -> bool:
        raise NotImplementedError

    def _meet(self, obj: Any, model_attr: str = "model", id_attr: str = "id") -> None:
        if self.seen.response_id is None:
            response_id = getattr(obj, id_attr, None)
            if isinstance(response_id, str):
                self.seen.response_id = response_id
        if self.seen.model is None:
            model = getattr(obj, model_attr, None)
            if isinstance(model, str):
                self.seen.model = model


class ChatChunkTally(Tally):
    """OpenAI-shaped chat chunks: usage in a final chunk (OpenAI, OpenRouter) or under `x_groq` (Groq)."""

    def __init__(self, hide_usage_chunk: bool, groq: bool = False) -> None:
        super().__init__()
        self.hide_usage_chunk = hide_usage_chunk
        self.groq = groq  # only Groq's chunk model declares x_groq; asking others for it is a slow miss

    def observe(self, item: Any) -> bool:
        self._meet(item)
        usage = item.usage
        if usage is None and self.groq:
            x_groq = item.x_groq
            usage = x_groq.usage if x_groq is not None else None
        if usage is None:
            return False
        self.seen.usage = openai_chat_usage(usage)
        self.complete = True
        # the chunk that exists only because usage was requested for billing: its `choices` is empty
        return self.hide_usage_chunk and not getattr(item, "choices", None)


class ChatHelperTally(ChatChunkTally):
    """`chat.completions.stream()` events: the raw chunks arrive inside `chunk` events."""

    def observe(self, item: Any) -> bool:
        if getattr(item, "type", None) != "chunk":
            return False
        return super().observe(item.chunk)


_RESPONSE_DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesTally(Tally):
    def observe(self, item: Any) -> bool:
        kind = getattr(item, "type", None)
        if kind == "response.created":
            self._meet(item.response)
        elif kind in _RESPONSE_DONE:
            response = item.response
            self._meet(response)
            usage = getattr(response, "usage", None)
            if usage is not None:
                self.seen.usage = openai_responses_usage(usage)
                self.complete = True
        return False


class AnthropicTally(Tally):
    """`message_start` carries input and a preliminary output; `message_delta` usage is CUMULATIVE."""

    def __init__(self) -> None:
        super().__init__()
        self._totals = SimpleNamespace()

    def observe(self, item: Any) -> bool:
        kind = getattr(item, "type", None)
        if kind == "message_start":
            self._meet(item.message)
            self._take(item.message.usage)
        elif kind == "message_delta":
            self._take(item.usage)
        elif kind == "message_stop":
            self.complete = True
        return False

    def _take(self, usage: Any) -> None:
        # replace, never add: every field an event carries is the running total so far
        for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            value = getattr(usage, name, None)
            if value is not None:
                setattr(self._totals, name, value)
        self.seen.usage = anthropic_usage(self._totals)


class GeminiTally(Tally):
    """Every chunk repeats the running totals; the last chunk's are the call's."""

    def observe(self, item: Any) -> bool:
        self._meet(item, model_attr="model_version", id_attr="response_id")
        meta = getattr(item, "usage_metadata", None)
        if meta is not None:
            self.seen.usage = gemini_usage(meta)
        return False


def read_chat_helper_snapshot(stream: Any) -> tuple[Observation, bool]:
    """What `chat.completions.stream()` accumulated, read when its context manager exits."""
    try:
        snapshot = stream.current_completion_snapshot
    except AssertionError:  # nothing arrived
        return Observation(), False
    observation = read_openai_chat(snapshot)
    return observation, observation.usage is not None


def read_anthropic_helper_snapshot(stream: Any) -> tuple[Observation, bool]:
    """What `messages.stream()` accumulated (the SDK already treats `message_delta` as cumulative)."""
    try:
        snapshot = stream.current_message_snapshot
    except AssertionError:
        return Observation(), False
    return read_anthropic_message(snapshot), getattr(snapshot, "stop_reason", None) is not None
