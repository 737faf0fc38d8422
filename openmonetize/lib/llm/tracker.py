"""`create_llm_tracker`: wrap a provider client so that every billed call records one usage event.

The events go through an `OpenMonetize` delivery client (its queue, batching, retries and spool). The
wrapped client is the provider's own object behind a transparent proxy; recording costs microseconds on
the caller's thread, never waits for room in a full queue, and never raises into the caller. A call that
cannot be recorded (no customer, an event that fails its rules) is reported through `on_error` as
`untracked`, with what was known about it, so no paid call disappears silently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import types
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from openmonetize.lib import event_json
from openmonetize.lib.client import OpenMonetize
from openmonetize.lib.event_ids import new_event_id, utc_datetime
from openmonetize.lib.event_rules import MAX_METADATA_JSON_BYTES, MAX_METADATA_KEYS
from openmonetize.lib.event_types import MODELS_BY_TYPE
from openmonetize.lib.failures import DeliveryFailure
from openmonetize.lib.llm.proxies import COMPLETED, tracked_client
from openmonetize.lib.llm.routes import SUPPORTED, describe, detect_provider, routes_for
from openmonetize.lib.llm.usage import Observation, PlainCounts, Usage
from openmonetize.models.token_usage_event import TokenUsageEvent

if TYPE_CHECKING:
    from openmonetize.lib.llm.langchain import OpenMonetizeCallbackHandler

logger = logging.getLogger("openmonetize.llm")

ClientT = TypeVar("ClientT")

#: Room kept in every event's metadata for the keys the tracker adds (`response_id`, `partial`, `cost`,
#: the token kinds without a field of their own...; the list is in docs/guides/llm.md). A wrap's or a
#: `customer()` scope's metadata may use the rest.
TRACKER_METADATA_KEYS = 10
TRACKER_METADATA_BYTES = 1024
#: A provider response id longer than this is kept as its UUIDv5, so the reserved room always suffices.
_MAX_RESPONSE_ID = 200
RESPONSE_ID_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")
_NONE: Mapping[str, Any] = types.MappingProxyType({})
_NOT_RECORDED = "openmonetize: could not record LLM usage for customer_id=%r (provider %s, model %r)"
#: each event type's `event_json.writer`: the event's JSON from its fields as keyword arguments
_WRITERS = {event_type: event_json.writer(model) for event_type, model in MODELS_BY_TYPE.items()}
#: what differs between two plain calls of one wrap (`Billing.plain`): `PlainCounts`, in its order
_PLAIN_PARAMETERS = ("model", "metadata.response_id", "input_tokens", "output_tokens", "cached_input_tokens",
                     "reasoning_tokens")
#: scopes whose bound writers a wrap keeps (`Billing.scoped`); past it they are all let go (and bound again
#: at their next call): a bound on memory, since a scope's end is not seen by the wraps it bills through
_MAX_SCOPES = 64


@dataclass(frozen=True)
class Attribution:
    """Who a call is billed to: from the wrap, or from the `tracker.customer(...)` scope around the call."""

    customer_id: str
    user_id: str | None = None
    #: read-only in a scope's (`customer()`): what the block checked when it began is what its calls bill
    metadata: Mapping[str, Any] | None = None


class LLMTracker:
    """Wraps provider clients; create one per process (`create_llm_tracker`) and wrap per customer, or wrap
    once and name the customer per request with `tracker.customer(...)`."""

    def __init__(self, client: OpenMonetize, *, feature_id: str, owns_client: bool) -> None:
        self.client = client
        self.feature_id = feature_id
        self._owns_client = owns_client
        # one per tracker, so two trackers in a process never see each other's customer
        self._scope: ContextVar[Attribution | None] = ContextVar(f"openmonetize_customer_{id(self):x}", default=None)

    def wrap(
        self,
        client: ClientT,
        customer_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        feature_id: str | None = None,
        team_id: str | None = None,
        provider: str | None = None,
    ) -> ClientT:
        """The same client, billing every tracked call to `customer_id` (or, without one, to the customer of
        the `tracker.customer(...)` scope the call is made in).

        About 20-30 us (bench/llm_overhead.py --isolated-only: one proxy object, the validation of the
        arguments, and the plain calls' event written up to its counts, `Billing.plain`): wrapping per request
        is fine. `provider` overrides the provider recorded on events (detected from the client's class and
        base URL). Bad arguments raise here, before any LLM call is made.
        """
        provider = provider or detect_provider(client)
        routes = routes_for(provider or "", client)
        if provider is None or routes is None:
            raise TypeError(f"client={describe(client)} is not supported: "
                            f"wrap one of {SUPPORTED}")
        billing = self.billing(provider=provider, customer_id=customer_id, user_id=user_id, metadata=metadata,
                               feature_id=feature_id, team_id=team_id)
        return cast(ClientT, tracked_client(client, routes, billing, routes))

    def langchain_handler(
        self,
        customer_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        feature_id: str | None = None,
        team_id: str | None = None,
        provider: str | None = None,
    ) -> OpenMonetizeCallbackHandler:
        """A LangChain callback handler billing one event per LLM call of the runs it is passed to
        (`callbacks=[handler]`), to `customer_id` or the `tracker.customer(...)` scope around the call.

        The provider is each run's own (`ls_provider`); `provider` overrides it. Needs `langchain-core`
        (imported here, not by `import openmonetize`). Bad arguments raise here.
        """
        from openmonetize.lib.llm.langchain import OpenMonetizeCallbackHandler

        return OpenMonetizeCallbackHandler(self, customer_id, user_id, metadata, feature_id=feature_id,
                                           team_id=team_id, provider=provider)

    @contextlib.contextmanager
    def customer(self, customer_id: str, user_id: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> Iterator[Attribution]:
        """Bill the calls made inside the block (this thread or asyncio task only) to `customer_id`.

        For clients wrapped without a `customer_id`: module-level clients, chains, agents. A wrap that
        names its own customer ignores the scope. Bad arguments raise here. The block's values are fixed when it
        begins (the yielded `Attribution`'s metadata is read-only): a wrap's plain calls inside it are written
        from what it fixes, bound at the first of them (`Billing.record_plain`).
        """
        attribution = Attribution(customer_id, user_id,
                                  types.MappingProxyType(dict(metadata)) if metadata is not None else None)
        _check_identity(attribution, provider="probe", feature_id=self.feature_id, team_id=None)
        token = self._scope.set(attribution)
        try:
            yield attribution
        finally:
            self._scope.reset(token)

    def billing(self, *, provider: str, customer_id: str | None = None, user_id: str | None = None,
                metadata: Mapping[str, Any] | None = None, feature_id: str | None = None,
                team_id: str | None = None) -> Billing:
        """What the integrations (client proxies, LiteLLM, LangChain) record through; checks its arguments."""
        if customer_id is None and user_id is not None:
            raise ValueError(f"user_id={user_id!r} needs a customer_id: a user belongs to a customer")
        wrapped = Attribution(customer_id, user_id, dict(metadata) if metadata is not None else None) \
            if customer_id is not None else None
        feature_id = feature_id or self.feature_id
        if wrapped is not None:
            _check_identity(wrapped, provider=provider, feature_id=feature_id, team_id=team_id)
        else:
            _check_identity(Attribution("probe", None, dict(metadata) if metadata else None), provider=provider,
                            feature_id=feature_id, team_id=team_id)
        return Billing(self.client, self._scope, provider=provider, attribution=wrapped,
                       metadata=dict(metadata) if metadata and wrapped is None else None,
                       feature_id=feature_id, team_id=team_id)

    def flush(self, timeout: float | None = None) -> bool:
        return self.client.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Shut down the delivery client if the tracker created it, else flush it (a shared one belongs to its
        owner); within `timeout` seconds, None meaning the client's `shutdown_timeout` (as `OpenMonetize.shutdown`)."""
        if timeout is None:
            timeout = self.client.shutdown_timeout
        return self.client.shutdown(timeout) if self._owns_client else self.client.flush(timeout)

    def __repr__(self) -> str:
        return f"LLMTracker(feature_id={self.feature_id!r}, client={self.client!r})"


def create_llm_tracker(
    api_key: str | None = None,
    base_url: str | None = None,
    *,
    feature_id: str = "chat-completion",
    client: OpenMonetize | None = None,
    **options: Any,
) -> LLMTracker:
    """A tracker sending through `client` (to share its queue) or through a new `OpenMonetize`.

    `options` are passed to the new `OpenMonetize` (`spool_dir=`, `on_error=`...).
    """
    if client is not None:
        if api_key is not None or base_url is not None or options:
            raise ValueError("pass either client= or the options for a new client (api_key, base_url, ...)")
        return LLMTracker(client, feature_id=feature_id, owns_client=False)
    return LLMTracker(OpenMonetize(api_key, base_url, **options), feature_id=feature_id, owns_client=True)


class Billing:
    """One wrap: what it bills for (provider, feature, team) and, when the wrap names one, who pays."""

    __slots__ = ("attribution", "client", "feature_id", "metadata", "plain", "provider", "scope", "scoped", "team_id")

    def __init__(self, client: OpenMonetize, scope: ContextVar[Attribution | None], *, provider: str,
                 attribution: Attribution | None, metadata: dict[str, Any] | None, feature_id: str,
                 team_id: str | None) -> None:
        self.client = client
        self.scope = scope
        self.provider = provider
        self.attribution = attribution
        self.metadata = metadata  # a wrap without a customer may still add metadata to the scope's
        self.feature_id = feature_id
        self.team_id = team_id
        # A wrap that names who pays fixes all of a plain call's event but `PlainCounts`: that part is checked
        # and written once, here (None: the wrap's values are beyond `event_json.bound`; the general write then)
        self.plain = self._bind(attribution) if attribution is not None else None
        # a wrap without a customer: the same, once per `tracker.customer(...)` scope its plain calls are billed
        # to (id of the scope's Attribution -> it, kept so the id names it, and its writer or None)
        self.scoped: dict[int, tuple[Attribution, Any]] = {}

    def _bind(self, attribution: Attribution) -> Any:
        """The bound writer of a plain call billed to `attribution` by this wrap (None: the general write), its
        metadata merged as `Call.record_counts` merges it: the scope's, then the wrap's, then `response_id`."""
        metadata = {**(attribution.metadata or _NONE), **(self.metadata or _NONE)}
        return event_json.bound(TokenUsageEvent, {
            "customer_id": attribution.customer_id, "user_id": attribution.user_id, "team_id": self.team_id,
            "feature_id": self.feature_id, "provider": self.provider, "metadata": metadata or None,
        }, _PLAIN_PARAMETERS)

    def start(self, request: Mapping[str, Any], now_ns: int | None = None) -> Call:
        """A call begins: who pays and the event's instant are fixed now, at call time (a stream may end
        elsewhere); `now_ns`: the instant, read when the call began."""
        return Call(self, self.attribution or self.scope.get(), request, now_ns)

    def record_plain(self, now_ns: int, request: Mapping[str, Any], counts: PlainCounts) -> None:
        """`start(request, now_ns).record_counts(counts)`: a completed call, begun at `now_ns`, whose answer is
        nothing but `counts`. Its event is written and queued without a `Call`, by the bound writer of who pays:
        the wrap's (`plain`), or that of the scope the call is made in (`scoped`, bound at its first call)."""
        attribution = self.attribution
        plain = self.plain
        if attribution is None:
            attribution = self.scope.get()
            if attribution is None:  # no one pays: the general write reports it
                self.start(request, now_ns).record_counts(counts)
                return
            entry = self.scoped.get(id(attribution))
            if entry is None or entry[0] is not attribution:
                if len(self.scoped) >= _MAX_SCOPES:
                    self.scoped.clear()
                entry = self.scoped[id(attribution)] = (attribution, self._bind(attribution))
            plain = entry[1]
        if plain is not None:
            # Arguments one by one, never `*counts` or `*written`: with a keyword, a starred call builds a
            # tuple and a dict, 5 us of the caller's after an HTTP call (bench/llm_overhead.py --parts).
            model, response_id, input_tokens, output_tokens, cached, reasoning = counts
            written = plain(now_ns, model, response_id, input_tokens, output_tokens, cached, reasoning)
            if written is not None:
                _queue(self, attribution, written[0], written[1], model)
                return
        Call(self, attribution, request, now_ns).record_counts(counts)


class Call:
    """One billed call. `record` turns what it produced into one event, once; later calls do nothing."""

    __slots__ = ("attribution", "billing", "event_id", "now_ns", "recorded", "request")

    def __init__(self, billing: Billing, attribution: Attribution | None, request: Mapping[str, Any],
                 now_ns: int | None = None) -> None:
        self.billing = billing
        self.attribution = attribution
        self.request = request
        # The call's instant, read now: the event's timestamp, and the millisecond of its id. The id is
        # minted per call from it, never derived from the provider's response id (gateways repeat those, and
        # the service wants UUIDs; the response id is kept in metadata instead), when the event is written
        # (`event_json.dump`: the id and the timestamp's text in one lookup); minting it here as well made
        # the write format a second, unused one.
        self.now_ns = time.time_ns() if now_ns is None else now_ns
        self.event_id: str | None = None  # the recorded event's, once there is one
        self.recorded = False

    def record(self, observation: Observation, end: str = COMPLETED) -> None:
        if self.recorded:
            return
        self.recorded = True
        try:
            fields, adjusted = self._fields(observation, end)
        except Exception:
            logger.exception("openmonetize: could not record LLM usage (provider %s, model %r)",
                             self.billing.provider, observation.model)
            return
        self._write(fields, adjusted, observation.model)

    def record_counts(self, counts: PlainCounts) -> None:
        """`record` of a completed call whose answer is nothing but `counts` (`routes.Method.counts`): the
        event `record(read(answer))` makes, without the `Observation`, `Usage` and `_fields`' general cases
        (test_llm_fastpath compares the two)."""
        if self.recorded:
            return
        self.recorded = True
        billing, attribution = self.billing, self.attribution
        if billing.plain is not None and attribution is billing.attribution:
            written = billing.plain(self.now_ns, *counts)  # the event below, written from the wrap's fixed part
            if written is not None:
                self._queue(written, counts[0])
                return
        model, response_id, input_tokens, output_tokens, cached, reasoning = counts
        scope_metadata = attribution.metadata if attribution is not None else None
        # as `_fields` merges them: the scope's, the wrap's, the tracker's (one dict display, no calls)
        metadata = {**(scope_metadata or _NONE), **(billing.metadata or _NONE), "response_id": response_id}
        self._write({
            "event_id": self.event_id,
            "customer_id": attribution.customer_id if attribution else None,
            "user_id": attribution.user_id if attribution else None,
            "team_id": billing.team_id, "feature_id": billing.feature_id, "event_type": "TOKEN_USAGE",
            "provider": billing.provider, "model": model, "input_tokens": input_tokens, "output_tokens": output_tokens,
            "cached_input_tokens": cached, "reasoning_tokens": reasoning, "metadata": metadata,
        }, "", model)

    def _write(self, fields: dict[str, Any], adjusted: str, model: str | None) -> None:
        """Queue the event of these fields (`_fields`), or report it: no customer, or a rule it breaks."""
        client = self.billing.client
        if self.attribution is None:
            client._report(DeliveryFailure("untracked", [self._as_sent(fields)], (
                "a billable LLM call had no customer: wrap the client with customer_id=, or make the call "
                "inside `with tracker.customer(...)`")))
            return
        event_type = fields.pop("event_type")
        try:
            written = _WRITERS[event_type](self.now_ns, **fields)  # `event_json.dump` of one of the spec's models
        except Exception as exc:  # the model names what breaks a rule
            fields["event_type"] = event_type
            logger.exception(_NOT_RECORDED, self.attribution.customer_id, self.billing.provider, model)
            client._report(DeliveryFailure("untracked", [self._as_sent(fields)], f"the event breaks a rule: {exc}"))
            return
        if self._queue(written, model) and adjusted:
            client._report(DeliveryFailure("adjusted", [json.loads(written[1])], adjusted))

    def _queue(self, written: tuple[str, bytes], model: str | None) -> bool:
        """Queue the written event (id, JSON), never waiting for room; False if queueing failed (logged)."""
        self.event_id, body = written
        assert self.attribution is not None
        return _queue(self.billing, self.attribution, self.event_id, body, model)

    def _as_sent(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields of an event that could not be built, as they would have been sent (for `on_error`)."""
        if fields.get("event_id") is None:  # (the id an event gets when it is written: made here instead)
            fields["event_id"] = self.event_id = new_event_id(self.now_ns)
        out = {key: value for key, value in fields.items() if value is not None}
        out["timestamp"] = utc_datetime(self.now_ns).isoformat()
        return out

    def _fields(self, observation: Observation, end: str) -> tuple[dict[str, Any], str]:
        """The event's fields, and a description of what was adjusted to make them consistent ('' if nothing)."""
        billing, attribution = self.billing, self.attribution
        usage, images, units = observation.usage, observation.images, observation.units
        if usage is None and images is None and units is None:
            usage = Usage()
            end = end if end != COMPLETED else "no_usage"
        own: dict[str, Any] = {}  # the tracker's keys, within the room kept for them
        response_id = observation.response_id
        if response_id:
            own["response_id"] = response_id if len(response_id) <= _MAX_RESPONSE_ID else \
                str(uuid.uuid5(RESPONSE_ID_NAMESPACE, response_id))
        if end != COMPLETED:
            own["partial"] = True
            own["stream_end"] = end
        provider = observation.provider or billing.provider
        model = observation.model
        if not model:
            requested = self.request.get("model")
            model = requested if isinstance(requested, str) and requested else "unknown"
        fields: dict[str, Any] = {
            "event_id": self.event_id,
            "customer_id": attribution.customer_id if attribution else None,
            "user_id": attribution.user_id if attribution else None,
            "team_id": billing.team_id, "feature_id": billing.feature_id,
        }
        adjusted = ""
        extra = usage.extra if usage is not None and usage.extra else None  # copied below, never changed
        if images is not None:
            extra = dict(extra) if extra else {}
            if usage is not None:
                extra.update(usage.as_metadata())
            fields.update(event_type="IMAGE_GENERATION", provider=provider, model=model,
                          image_count=images.count, image_size=images.size, quality=images.quality)
        elif units is not None:
            own.update(provider=provider, model=model)
            fields.update(event_type="CUSTOM", unit_type=units.unit_type, quantity=units.quantity)
        else:
            assert usage is not None
            fields["event_type"] = "TOKEN_USAGE"
            fields["provider"] = provider
            fields["model"] = model
            whole_in, whole_out = usage.input_tokens, usage.output_tokens
            cached, reasoning = usage.cached_input_tokens, usage.reasoning_tokens
            if type(whole_in) is int and type(whole_out) is int and whole_in >= 0 and whole_out >= 0 \
                    and (cached is None or (type(cached) is int and 0 <= cached <= whole_in)) \
                    and (reasoning is None or (type(reasoning) is int and 0 <= reasoning <= whole_out)):
                # `usage.consistent()`'s usual answer (nothing to adjust), without its frame and dict
                fields["input_tokens"] = whole_in
                fields["output_tokens"] = whole_out
                fields["cached_input_tokens"] = cached
                fields["reasoning_tokens"] = reasoning
            else:
                counts, adjusted = usage.consistent()
                if adjusted:
                    own["usage_adjusted"] = adjusted
                fields.update(counts)
        if extra:
            if len(own) + len(extra) > TRACKER_METADATA_KEYS:  # many token kinds at once: one key holds them all
                own["usage_details"] = dict(extra)
            else:
                own.update(extra)
        scope_metadata = attribution.metadata if attribution is not None else None
        if scope_metadata or billing.metadata:
            metadata: dict[str, Any] = {}
            if scope_metadata:
                metadata.update(scope_metadata)
            if billing.metadata:
                metadata.update(billing.metadata)
            metadata.update(own)
        else:
            metadata = own
        fields["metadata"] = metadata or None
        return fields, adjusted


def _check_identity(attribution: Attribution, *, provider: str, feature_id: str, team_id: str | None) -> None:
    """A probe event checks every field now, with the usual messages (field, value, rule)."""
    TokenUsageEvent(customer_id=attribution.customer_id, user_id=attribution.user_id, team_id=team_id,
                    feature_id=feature_id, provider=provider, model="probe", input_tokens=0, output_tokens=0,
                    metadata=dict(attribution.metadata) if attribution.metadata is not None else None)
    if attribution.metadata:
        _check_metadata_room(attribution.metadata)


def _check_metadata_room(metadata: Mapping[str, Any]) -> None:
    """Keep room for the keys the tracker adds, so an event can never fail the size rules after the call."""
    max_keys = MAX_METADATA_KEYS - TRACKER_METADATA_KEYS
    if len(metadata) > max_keys:
        raise ValueError(f"metadata has {len(metadata)} keys: at most {max_keys} are allowed for LLM tracking "
                         f"(the tracker keeps {TRACKER_METADATA_KEYS} for its own, such as response_id)")
    size = len(json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False).encode())
    max_bytes = MAX_METADATA_JSON_BYTES - TRACKER_METADATA_BYTES
    if size > max_bytes:
        raise ValueError(f"metadata is {size} bytes as JSON: at most {max_bytes} bytes are allowed for LLM "
                         f"tracking (the tracker keeps {TRACKER_METADATA_BYTES} bytes for its own keys)")


def _queue(billing: Billing, attribution: Attribution, event_id: str, body: bytes, model: str | None) -> bool:
    """Queue a written event, never waiting for room (after a paid call); False if queueing failed (logged)."""
    try:
        billing.client._enqueue_json(event_id, body, False)  # (`wait` by position: no keyword to match)
    except Exception:
        logger.exception(_NOT_RECORDED, attribution.customer_id, billing.provider, model)
        return False
    return True
