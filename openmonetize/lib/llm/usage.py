"""Reading token usage out of provider responses and streams.

Everything here is duck-typed on the providers' response objects (pydantic models in every SDK), so the
provider SDKs stay optional imports. The accounting rules are the table in `docs/guides/llm.md`:

- output includes reasoning/thinking tokens (OpenAI and Anthropic already count them inside their
  output; Gemini's `thoughts_token_count` is separate and is added);
- Anthropic input is input + cache creation + cache read, and the cache read is `cached_input_tokens`;
- stream usage is read where each provider puts it and is never summed: OpenAI's usage-only final chunk,
  Groq's `x_groq.usage`, the Responses `response.completed` event, Anthropic's cumulative
  `message_delta`, Gemini's running totals (the last one wins);
- token kinds without a field of their own (audio, image, cache writes by TTL, predictions) and
  per-call tool fees (web searches...) become documented metadata keys, kept only when non-zero;
- images (OpenAI, Imagen) and units other than tokens (audio seconds, TTS characters) have readers of
  their own, which also see the request for what the answer does not echo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, SimpleNamespace
from typing import Any, cast

Metadata = dict[str, Any]
#: the keyword arguments of the call, for what a response does not echo (DALL-E's size, TTS input)
Request = Mapping[str, Any]
NO_REQUEST: Request = MappingProxyType({})


@dataclass(slots=True)
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


@dataclass(slots=True)
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


_ABSENT = object()
_NOTHING: Mapping[str, Any] = MappingProxyType({})

#: how `field_of` reads an object of each type met so far (keyed by type; an object whose `__class__`
#: is not its type, a proxy, is never cached): a mapping's keys, a pydantic model's storage, or attributes
_MAPPING, _MODEL, _OBJECT = 1, 2, 3
_KINDS: dict[type, int] = {}
_MAX_KINDS = 1024  # a bound, should something make model types per call


def _kind(obj: Any) -> int:
    """How to read `obj`; `isinstance(obj, Mapping)` (an ABC check, slow) runs once per type."""
    how = _MAPPING if isinstance(obj, Mapping) else _MODEL if hasattr(type(obj), "__pydantic_fields__") \
        and getattr(obj, "__dict__", None) is not None else _OBJECT
    if obj.__class__ is type(obj) and len(_KINDS) < _MAX_KINDS:
        _KINDS[type(obj)] = how
    return how


def field_of(obj: Any, name: str) -> Any:
    """A field of an SDK model (declared, or kept in `__pydantic_extra__`), a dict's key, or an attribute.

    Read from the model's storage: `getattr` of a field the SDK's model does not declare goes through
    pydantic's `__getattr__` and costs microseconds to raise, and most optional counts are absent."""
    if obj is None:
        return None
    how = _KINDS.get(type(obj)) or _kind(obj)
    if how == _MODEL:
        value = obj.__dict__.get(name, _ABSENT)
        if value is not _ABSENT:
            return value
        extra = obj.__pydantic_extra__
        return extra.get(name) if extra else None
    if how == _MAPPING:
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        value = fields.get(name, _ABSENT)
        if value is not _ABSENT:
            return value
    return getattr(obj, name, None)


class _Fields:
    """`field_of(obj, name)` as `get(name)`, for the objects `fields_of` has no mapping of."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def get(self, name: str) -> Any:
        return field_of(self.obj, name)


def fields_of(obj: Any) -> Mapping[str, Any] | _Fields:
    """Something whose `get(name)` is `field_of(obj, name)`, for reading several fields of one object:
    a pydantic model's own storage (with its extras), the mapping itself, or a reader of attributes."""
    if obj is None:
        return _NOTHING
    how = _KINDS.get(type(obj)) or _kind(obj)
    if how == _MODEL:
        extra = obj.__pydantic_extra__
        return {**extra, **obj.__dict__} if extra else obj.__dict__  # a declared field wins, as in field_of
    if how == _MAPPING:
        return cast(Mapping[str, Any], obj)
    return _Fields(obj)


def _keep(extra: Metadata, key: str, value: Any) -> None:
    """Add a count as a metadata key when it is a positive int (zeros are the common case: left out)."""
    if type(value) is int and value > 0:
        extra[key] = value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- final objects ----------------------------------------------------------------------------------


#: parts of prompt_tokens / completion_tokens priced differently (audio, predicted outputs, cache writes):
#: (metadata key, field of the details object)
_CHAT_PROMPT_KINDS = (("input_audio_tokens", "audio_tokens"), ("input_image_tokens", "image_tokens"),
                      ("cache_creation_input_tokens", "cache_write_tokens"))
_CHAT_COMPLETION_KINDS = (("output_audio_tokens", "audio_tokens"),
                          ("accepted_prediction_tokens", "accepted_prediction_tokens"),
                          ("rejected_prediction_tokens", "rejected_prediction_tokens"))


def openai_chat_usage(usage: Any) -> Usage:
    """Chat Completions (also Groq, OpenRouter, any OpenAI-compatible server)."""
    fields = fields_of(usage)
    prompt_details = fields_of(fields.get("prompt_tokens_details"))
    completion_details = fields_of(fields.get("completion_tokens_details"))
    extra: Metadata = {}
    cost = fields.get("cost")  # OpenRouter's
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        extra["cost"] = cost
    for key, name in _CHAT_PROMPT_KINDS:  # kept only when a positive int, as `_keep`
        value = prompt_details.get(name)
        if type(value) is int and value > 0:
            extra[key] = value
    for key, name in _CHAT_COMPLETION_KINDS:
        value = completion_details.get(name)
        if type(value) is int and value > 0:
            extra[key] = value
    input_tokens, output_tokens = fields.get("prompt_tokens"), fields.get("completion_tokens")
    cached, reasoning = prompt_details.get("cached_tokens"), completion_details.get("reasoning_tokens")
    return Usage(
        input_tokens=input_tokens if type(input_tokens) is int else 0,
        output_tokens=output_tokens if type(output_tokens) is int else 0,
        cached_input_tokens=cached if type(cached) is int else None,
        reasoning_tokens=reasoning if type(reasoning) is int else None,
        extra=extra,
    )


def openai_responses_usage(usage: Any) -> Usage:
    input_details = getattr(usage, "input_tokens_details", None)
    extra: Metadata = {}
    _keep(extra, "cache_creation_input_tokens", field_of(input_details, "cache_write_tokens"))  # part of input_tokens
    return Usage(
        input_tokens=_int(getattr(usage, "input_tokens", 0)),
        output_tokens=_int(getattr(usage, "output_tokens", 0)),
        cached_input_tokens=_opt_int(field_of(input_details, "cached_tokens")),
        reasoning_tokens=_opt_int(
            getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", None)),
        extra=extra,
    )


#: Responses output items of the built-in tools billed per call, and the metadata key counting each
RESPONSES_TOOL_CALLS = {
    "web_search_call": "web_search_calls",
    "file_search_call": "file_search_calls",
    "code_interpreter_call": "code_interpreter_calls",
    "image_generation_call": "image_generation_calls",
}


def responses_tool_calls(response: Any) -> Metadata:
    """How many times each per-call-billed built-in tool ran, from the response's `output` items."""
    counts: Metadata = {}
    for item in getattr(response, "output", None) or ():
        key = RESPONSES_TOOL_CALLS.get(field_of(item, "type"))
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


def anthropic_usage(usage: Any) -> Usage:
    """Anthropic reports cache writes and reads beside `input_tokens`, not inside it."""
    base = _int(getattr(usage, "input_tokens", 0))
    written = _int(getattr(usage, "cache_creation_input_tokens", None))
    read = _int(getattr(usage, "cache_read_input_tokens", None))
    extra: Metadata = {"cache_creation_input_tokens": written} if written else {}
    by_ttl = getattr(usage, "cache_creation", None)  # the writes split by cache lifetime, priced apart
    _keep(extra, "cache_creation_5m_input_tokens", field_of(by_ttl, "ephemeral_5m_input_tokens"))
    _keep(extra, "cache_creation_1h_input_tokens", field_of(by_ttl, "ephemeral_1h_input_tokens"))
    _keep(extra, "web_search_calls", field_of(getattr(usage, "server_tool_use", None), "web_search_requests"))
    return Usage(
        input_tokens=base + written + read,
        output_tokens=_int(getattr(usage, "output_tokens", 0)),
        cached_input_tokens=read if read else None,
        reasoning_tokens=_opt_int(field_of(getattr(usage, "output_tokens_details", None), "thinking_tokens")),
        extra=extra,
    )


def gemini_usage(meta: Any) -> Usage:
    """Gemini counts thinking (`thoughts_token_count`) and tool-use prompts outside its two main counts."""
    thoughts = _opt_int(getattr(meta, "thoughts_token_count", None))
    extra: Metadata = {}
    for details, side in (("prompt_tokens_details", "input"), ("candidates_tokens_details", "output")):
        for detail in getattr(meta, details, None) or ():
            modality = _GEMINI_MODALITIES.get(_enum_name(field_of(detail, "modality")))
            if modality is not None:
                _keep(extra, f"{side}_{modality}_tokens", field_of(detail, "token_count"))
    return Usage(
        input_tokens=_int(getattr(meta, "prompt_token_count", 0))
        + _int(getattr(meta, "tool_use_prompt_token_count", None)),
        output_tokens=_int(getattr(meta, "candidates_token_count", 0)) + (thoughts or 0),
        cached_input_tokens=_opt_int(getattr(meta, "cached_content_token_count", None)),
        reasoning_tokens=thoughts,
        extra=extra,
    )


#: Gemini modalities priced apart from text (the per-modality parts of its counts)
_GEMINI_MODALITIES = {"IMAGE": "image", "AUDIO": "audio", "VIDEO": "video"}


def _enum_name(value: Any) -> str:
    """google-genai's enums are `str` subclasses; a plain string (an undeclared field) stays itself."""
    return str(getattr(value, "value", value))


def _observe(response: Any, usage: Usage | None, model_attr: str = "model", id_attr: str = "id") -> Observation:
    model = getattr(response, model_attr, None)
    response_id = getattr(response, id_attr, None)
    return Observation(usage, model if isinstance(model, str) else None,
                       response_id if isinstance(response_id, str) else None)


def read_openai_chat(response: Any, request: Request = NO_REQUEST) -> Observation:
    usage = getattr(response, "usage", None)  # `_observe`, inlined: the most common call of all
    model, response_id = getattr(response, "model", None), getattr(response, "id", None)
    return Observation(openai_chat_usage(usage) if usage is not None else None,
                       model if isinstance(model, str) else None,
                       response_id if isinstance(response_id, str) else None)


#: (model, response id, input tokens, output tokens, cached input tokens, reasoning tokens)
PlainCounts = tuple[str, str, int, int, int | None, int | None]


def read_openai_chat_counts(response: Any) -> PlainCounts | None:
    """`read_openai_chat`'s usual answer, when there is nothing but the counts to bill, read without its
    objects: SDK models without extra fields (their `__dict__` is all `fields_of` would read), a model name,
    a response id of at most 200 characters (`tracker`'s limit for keeping it as it is), and consistent
    counts (none negative, no part above its whole); no cost, no other token kind (audio, images, cache
    writes, predictions). Anything else is None, and `read_openai_chat` reads it. Written out, without a
    Python call per object or count (bench/llm_overhead.py --parts: reading 6.6 us in a real call against
    15.6 for `read_openai_chat`). test_llm_fastpath pins that whenever this answers, the event is the one
    `read_openai_chat` makes."""
    kinds = _KINDS
    if (kinds.get(type(response)) or _kind(response)) != _MODEL:
        return None
    answer = response.__dict__
    usage, model, response_id = answer.get("usage"), answer.get("model"), answer.get("id")
    if usage is None or type(model) is not str or not model or type(response_id) is not str \
            or not 0 < len(response_id) <= 200 or (kinds.get(type(usage)) or _kind(usage)) != _MODEL \
            or usage.__pydantic_extra__:
        return None
    counts = usage.__dict__
    prompt, completion = counts.get("prompt_tokens_details"), counts.get("completion_tokens_details")
    cached = reasoning = None
    if prompt is not None:
        if (kinds.get(type(prompt)) or _kind(prompt)) != _MODEL or prompt.__pydantic_extra__:
            return None
        details = prompt.__dict__
        # `_CHAT_PROMPT_KINDS`: 0 or absent (anything else, billed or not, is `read_openai_chat`'s to read)
        if details.get("audio_tokens") or details.get("image_tokens") or details.get("cache_write_tokens"):
            return None
        cached = details.get("cached_tokens")
    if completion is not None:
        if (kinds.get(type(completion)) or _kind(completion)) != _MODEL or completion.__pydantic_extra__:
            return None
        details = completion.__dict__
        if details.get("audio_tokens") or details.get("accepted_prediction_tokens") \
                or details.get("rejected_prediction_tokens"):  # `_CHAT_COMPLETION_KINDS`
            return None
        reasoning = details.get("reasoning_tokens")
    whole_in, whole_out = counts.get("prompt_tokens"), counts.get("completion_tokens")
    if type(whole_in) is not int or type(whole_out) is not int or whole_in < 0 or whole_out < 0 \
            or counts.get("cost") is not None:
        return None
    if cached is not None and (type(cached) is not int or not 0 <= cached <= whole_in):
        return None
    if reasoning is not None and (type(reasoning) is not int or not 0 <= reasoning <= whole_out):
        return None
    return model, response_id, whole_in, whole_out, cached, reasoning


def read_openai_responses(response: Any, request: Request = NO_REQUEST) -> Observation:
    usage = getattr(response, "usage", None)
    observation = _observe(response, openai_responses_usage(usage) if usage is not None else None)
    if observation.usage is not None:
        observation.usage.extra.update(responses_tool_calls(response))
    return observation


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


def openai_image_usage(usage: Any) -> Usage:
    """gpt-image models' token usage (an image event keeps it as metadata); DALL-E reports none."""
    extra: Metadata = {}
    input_details = field_of(usage, "input_tokens_details")
    output_details = field_of(usage, "output_tokens_details")
    _keep(extra, "input_text_tokens", field_of(input_details, "text_tokens"))
    _keep(extra, "input_image_tokens", field_of(input_details, "image_tokens"))
    _keep(extra, "output_text_tokens", field_of(output_details, "text_tokens"))
    _keep(extra, "output_image_tokens", field_of(output_details, "image_tokens"))
    return Usage(input_tokens=_int(field_of(usage, "input_tokens")),
                 output_tokens=_int(field_of(usage, "output_tokens")),
                 cached_input_tokens=_opt_int(field_of(input_details, "cached_tokens")), extra=extra)


def _image_option(answered: Any, requested: Any) -> str | None:
    """The size or quality the answer reports (what was made, `auto` resolved), else the one requested."""
    for value in (answered, requested):
        value = _str(value)
        if value is not None and value != "auto":
            return value
    return None


def read_openai_images(response: Any, request: Request = NO_REQUEST) -> Observation:
    """`images.generate` / `edit` / `create_variation`: one image event for the images returned.

    DALL-E answers do not echo size or quality (the request's are used); gpt-image answers do, with
    token usage. No image returned (nothing to bill per image) leaves only the tokens, if any.
    """
    count = len(getattr(response, "data", None) or ())
    usage = getattr(response, "usage", None)
    images = Images(count, _image_option(getattr(response, "size", None), request.get("size")),
                    _image_option(getattr(response, "quality", None), request.get("quality"))) if count else None
    return Observation(openai_image_usage(usage) if usage is not None else None, images=images)


def read_openai_transcription(response: Any, request: Request = NO_REQUEST) -> Observation:
    """`audio.transcriptions.create` / `audio.translations.create`.

    whisper bills audio seconds (`usage.type == "duration"`, or `verbose_json`'s `duration`): a
    `CustomEvent`; gpt-4o-transcribe bills tokens (`usage.type == "tokens"`). A `text` / `srt` / `vtt`
    answer is a plain string without usage: it is recorded like any answer without usage (a zero-token
    event flagged `no_usage`).
    """
    if isinstance(response, str):
        return Observation()
    usage = getattr(response, "usage", None)
    kind = field_of(usage, "type")
    if kind == "tokens":
        extra: Metadata = {}
        details = field_of(usage, "input_token_details")
        _keep(extra, "input_audio_tokens", field_of(details, "audio_tokens"))
        _keep(extra, "input_text_tokens", field_of(details, "text_tokens"))
        return Observation(Usage(_int(field_of(usage, "input_tokens")), _int(field_of(usage, "output_tokens")),
                                 extra=extra))
    seconds = field_of(usage, "seconds") if kind == "duration" else getattr(response, "duration", None)
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
        return Observation(units=Units("audio_seconds", seconds))
    return Observation()


def read_openai_speech(response: Any, request: Request = NO_REQUEST) -> Observation:
    """`audio.speech.create`: binary audio, billed per input character; never parsed (see `Method.binary`)."""
    text = request.get("input")
    return Observation(units=Units("characters", len(text))) if isinstance(text, str) and text else Observation()


def read_imagen(response: Any, request: Request = NO_REQUEST) -> Observation:
    """Gemini `generate_images` / `edit_image` / `upscale_image` (Imagen, on Vertex): no usage, images only.

    Only images actually returned count (an image the safety filter removed comes back without one).
    """
    count = sum(1 for generated in getattr(response, "generated_images", None) or ()
                if getattr(generated, "image", None) is not None)
    size = _str(field_of(request.get("config"), "image_size"))
    return Observation(images=Images(count, size)) if count else Observation()


# -- streams: one tally per stream, fed every item the caller (or the SDK's helper) pulls -----------------


class Tally:
    """Accumulates what a stream has shown so far; `observe` returns True for items to hide from the caller."""

    def __init__(self) -> None:
        self.seen = Observation()
        self.complete = False  # the provider's final usage arrived
        self.items = 0  # how many stream items arrived

    def begin(self, stream: Any, request: Request) -> None:
        """Called once with the stream and the call's arguments before any item (LiteLLM reads its provider)."""

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
                self.seen.usage.extra.update(responses_tool_calls(response))
                self.complete = True
        return False


class ImageStreamTally(Tally):
    """gpt-image streams (`stream=True`): one `*.completed` event per image, each with that image's usage.

    Partial images (`*.partial_image`) are previews of the same image: not counted (their cost is in
    the usage of the completed event).
    """

    def __init__(self) -> None:
        super().__init__()
        self._usage: Usage | None = None
        self._count = 0

    def observe(self, item: Any) -> bool:
        kind = getattr(item, "type", None)
        if not (isinstance(kind, str) and kind.endswith(".completed")):
            return False
        self._count += 1
        usage = getattr(item, "usage", None)
        if usage is not None:
            read = openai_image_usage(usage)
            if self._usage is None:
                self._usage = read
            else:  # one image's usage per event: the call's is their sum
                self._usage.input_tokens += read.input_tokens
                self._usage.output_tokens += read.output_tokens
                for key, value in read.extra.items():
                    self._usage.extra[key] = self._usage.extra.get(key, 0) + value
        self.seen.usage = self._usage
        self.seen.images = Images(self._count, _image_option(getattr(item, "size", None), None),
                                  _image_option(getattr(item, "quality", None), None))
        self.complete = True
        return False


class TranscriptionTally(Tally):
    """gpt-4o-transcribe streams: the usage is in the final `transcript.text.done` event."""

    def observe(self, item: Any) -> bool:
        if getattr(item, "type", None) == "transcript.text.done":
            self.seen = read_openai_transcription(item)
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
        for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                     "cache_creation", "output_tokens_details", "server_tool_use"):
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
