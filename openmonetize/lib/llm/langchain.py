"""LangChain: a callback handler that bills every LLM call a LangChain run makes, one event per call.

`tracker.langchain_handler(customer_id=...)` returns it; pass it as `callbacks=[handler]` (or
`config={"callbacks": [handler]}`) to any chat model, chain or agent. It reads LangChain's standard
`AIMessage.usage_metadata`, so it works for every chat model integration, not only the clients `wrap`
knows. This is the only module that imports `langchain_core` (`pip install 'openmonetize[langchain]'`).

How a run becomes an event:

- `on_chat_model_start` / `on_llm_start`: who pays and the event id are fixed now, as `wrap` does at call
  time (the `tracker.customer(...)` scope is read here). The provider comes from the run's `ls_provider`
  metadata (an OpenAI-compatible host behind `ChatOpenAI` is named by its base URL, as `wrap` does).
- `on_llm_end`: once per call, streamed or not (LangChain hands the aggregated chunk to it once); an
  answer from LangChain's own LLM cache made no provider call and bills nothing.
- `on_llm_error`: a call that failed before producing anything bills nothing; a stream that had begun
  (chunks arrived, then it failed or the caller left it) is recorded as partial, like a wrapped stream.

The handler is a sync `BaseCallbackHandler` with `run_inline = True`: in async runs LangChain then calls
it on the event loop, in the calling task's context, instead of on an executor thread (it only queues an
event, never blocks). It never raises into LangChain: its own failures are logged on `openmonetize.llm`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult

from openmonetize.lib.llm.proxies import CLOSED, COMPLETED, ERROR
from openmonetize.lib.llm.routes import provider_from_url
from openmonetize.lib.llm.usage import Metadata, Observation, Usage, _int, _opt_int

if TYPE_CHECKING:
    from openmonetize.lib.llm.tracker import Billing, Call, LLMTracker

logger = logging.getLogger("openmonetize.llm")

#: Calls started and not yet ended that one handler keeps. A run LangChain never ends (a stream left
#: unconsumed forever, a cancelled task that skipped its callbacks) is dropped, oldest first, past this.
MAX_OPEN_RUNS = 10_000
#: LangChain's own message ids (`lc_run--<run id>`), which are not the provider's response id
_LC_ID_PREFIX = "lc_run-"
_MAX_PROVIDER = 128
#: `input_token_details` keys kept in metadata (all parts of `input_tokens`), under the names the client
#: proxies use for the same kinds (docs/guides/llm.md, "Token kinds kept in metadata")
_INPUT_DETAILS = {
    "ephemeral_5m_input_tokens": "cache_creation_5m_input_tokens",
    "ephemeral_1h_input_tokens": "cache_creation_1h_input_tokens",
    "audio": "input_audio_tokens",
}
_OUTPUT_DETAILS = {"audio": "output_audio_tokens"}  # a part of `output_tokens`


class OpenMonetizeCallbackHandler(BaseCallbackHandler):
    """Bills each LLM call of the runs it is attached to; see the module docstring."""

    run_inline = True  # async runs call it on the loop, in the caller's context, not on an executor thread
    raise_error = False

    def __init__(self, tracker: LLMTracker, customer_id: str | None = None, user_id: str | None = None,
                 metadata: Mapping[str, Any] | None = None, *, feature_id: str | None = None,
                 team_id: str | None = None, provider: str | None = None) -> None:
        self._tracker = tracker
        self._who: dict[str, Any] = {"customer_id": customer_id, "user_id": user_id, "metadata": metadata,
                                     "feature_id": feature_id, "team_id": team_id}
        self._provider = provider
        self._billings: dict[str, Billing] = {}
        self._runs: OrderedDict[UUID, Call] = OrderedDict()
        self._lock = threading.Lock()
        self._billing(provider or "openai")  # bad arguments raise here, before any LLM call

    def __repr__(self) -> str:
        return (f"OpenMonetizeCallbackHandler(customer_id={self._who['customer_id']!r}, "
                f"provider={self._provider!r}, open_runs={len(self._runs)})")

    # -- LangChain's callbacks ---------------------------------------------------------------------

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: Any, *, run_id: UUID,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._start(run_id, serialized, metadata, kwargs.get("invocation_params"))

    def on_llm_start(self, serialized: dict[str, Any] | None, prompts: Any, *, run_id: UUID,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._start(run_id, serialized, metadata, kwargs.get("invocation_params"))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._pop(run_id)
        if call is None:
            return
        try:
            if from_cache(response):
                return  # answered by LangChain's own cache: no provider call, nothing to bill
            observation = observe(response)
        except Exception:
            logger.exception("openmonetize: could not read LangChain usage (run %s)", run_id)
            observation = Observation()
        call.record(observation, COMPLETED)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, response: LLMResult | None = None,
                     **kwargs: Any) -> None:
        call = self._pop(run_id)
        if call is None or response is None:
            return
        try:
            # chunks arrived before the failure: the provider was generating, as a wrapped stream's `error`
            started = _first_generation(response)
            if not isinstance(started, (ChatGenerationChunk, GenerationChunk)):
                return  # the request failed: nothing was produced, nothing is billed
            observation = observe(response)
        except Exception:
            logger.exception("openmonetize: could not read LangChain usage (run %s)", run_id)
            return
        left = isinstance(error, (GeneratorExit, asyncio.CancelledError))
        call.record(observation, CLOSED if left else ERROR)

    # -- bookkeeping ------------------------------------------------------------------------------

    def _start(self, run_id: UUID, serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None,
               params: Any) -> None:
        try:
            provider = self._provider or provider_of(serialized, metadata)
            model = (metadata or {}).get("ls_model_name")
            if not isinstance(model, str) and isinstance(params, Mapping):
                model = params.get("model") or params.get("model_name")
            call = self._billing(provider).start({"model": model} if isinstance(model, str) else {})
            with self._lock:
                self._runs[run_id] = call
                evicted = self._runs.popitem(last=False)[0] if len(self._runs) > MAX_OPEN_RUNS else None
            if evicted is not None:
                logger.warning("openmonetize: more than %d LangChain LLM runs started and not ended: run %s "
                               "is forgotten and will not be billed", MAX_OPEN_RUNS, evicted)
        except Exception:
            logger.exception("openmonetize: could not start billing a LangChain run (%s)", run_id)

    def _pop(self, run_id: UUID) -> Call | None:
        with self._lock:
            return self._runs.pop(run_id, None)

    def _billing(self, provider: str) -> Billing:
        billing = self._billings.get(provider)
        if billing is None:
            billing = self._tracker.billing(provider=provider, **self._who)
            if len(self._billings) < 64:  # a handful of providers in practice; never an unbounded cache
                self._billings[provider] = billing
        return billing


def provider_of(serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None) -> str:
    """The provider recorded for a run: its `ls_provider`, or the host an OpenAI-compatible model calls."""
    provider = (metadata or {}).get("ls_provider")
    if not isinstance(provider, str) or not provider:
        return "unknown"
    if provider == "openai" and isinstance(serialized, Mapping):
        kwargs = serialized.get("kwargs")
        base_url = kwargs.get("openai_api_base") if isinstance(kwargs, Mapping) else None
        if isinstance(base_url, str):
            return _compatible_provider(base_url)
    return provider[:_MAX_PROVIDER]


@functools.lru_cache(maxsize=256)
def _compatible_provider(base_url: str) -> str:
    """Parsing the URL on every call costs microseconds; a process talks to a handful of base URLs."""
    return provider_from_url(base_url) or "openai"


def _first_generation(response: LLMResult) -> Any:
    for generations in response.generations:
        if generations:
            return generations[0]
    return None


def from_cache(response: LLMResult) -> bool:
    """A chat model's answer from its LLM cache (`cache=`, `set_llm_cache`): langchain-core replays the
    cached message with the original usage and marks it with `total_cost: 0`, a key nothing else sets."""
    usage_metadata = getattr(getattr(_first_generation(response), "message", None), "usage_metadata", None)
    return isinstance(usage_metadata, Mapping) and usage_metadata.get("total_cost") == 0


def observe(response: LLMResult) -> Observation:
    """One call's usage, model and response id from what `on_llm_end` got (the first generation's message:
    with `n > 1` every generation repeats the call's usage, so they are never summed)."""
    generation = _first_generation(response)
    message = getattr(generation, "message", None)
    llm_output = response.llm_output if isinstance(response.llm_output, Mapping) else {}
    response_metadata = getattr(message, "response_metadata", None)
    if not isinstance(response_metadata, Mapping):
        response_metadata = {}
    token_usage = response_metadata.get("token_usage") or llm_output.get("token_usage")
    usage = usage_of(getattr(message, "usage_metadata", None)) or _token_usage(token_usage)
    cost = token_usage.get("cost") if isinstance(token_usage, Mapping) else None  # OpenRouter's, as `wrap` keeps
    if usage is not None and isinstance(cost, (int, float)) and not isinstance(cost, bool):
        usage.extra["cost"] = cost
    model = response_metadata.get("model_name") or llm_output.get("model_name")
    response_id = response_metadata.get("id") or llm_output.get("id")
    if not isinstance(response_id, str):
        message_id = getattr(message, "id", None)
        response_id = message_id if isinstance(message_id, str) and not message_id.startswith(_LC_ID_PREFIX) \
            else None
    return Observation(usage, model if isinstance(model, str) and model else None, response_id or None)


def usage_of(usage_metadata: Any) -> Usage | None:
    """LangChain's standard `UsageMetadata`: `input_tokens` already includes cache reads and writes for every
    integration (langchain-anthropic adds Anthropic's separate counts), `output_tokens` includes reasoning."""
    if not isinstance(usage_metadata, Mapping):
        return None
    inputs = usage_metadata.get("input_token_details")
    inputs = inputs if isinstance(inputs, Mapping) else {}
    outputs = usage_metadata.get("output_token_details")
    outputs = outputs if isinstance(outputs, Mapping) else {}
    extra: Metadata = {}
    # langchain-anthropic zeroes `cache_creation` when it reports the writes by TTL instead
    written = _int(inputs.get("cache_creation")) or sum(
        _int(inputs.get(key)) for key in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"))
    if written:
        extra["cache_creation_input_tokens"] = written
    for details, names in ((inputs, _INPUT_DETAILS), (outputs, _OUTPUT_DETAILS)):
        for key, name in names.items():
            value = _int(details.get(key))
            if value:
                extra[name] = value
    return Usage(
        input_tokens=_int(usage_metadata.get("input_tokens")),
        output_tokens=_int(usage_metadata.get("output_tokens")),
        cached_input_tokens=_opt_int(inputs.get("cache_read")),
        reasoning_tokens=_opt_int(outputs.get("reasoning")),
        extra=extra,
    )


def _token_usage(token_usage: Any) -> Usage | None:
    """`llm_output["token_usage"]` in OpenAI's names: completion (non-chat) models, which have no message."""
    if not isinstance(token_usage, Mapping) or not token_usage:
        return None
    prompt = token_usage.get("prompt_tokens_details")
    completion = token_usage.get("completion_tokens_details")
    return Usage(
        input_tokens=_int(token_usage.get("prompt_tokens")),
        output_tokens=_int(token_usage.get("completion_tokens")),
        cached_input_tokens=_opt_int(prompt.get("cached_tokens")) if isinstance(prompt, Mapping) else None,
        reasoning_tokens=_opt_int(completion.get("reasoning_tokens")) if isinstance(completion, Mapping) else None,
    )
