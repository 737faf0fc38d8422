"""`create_llm_tracker`: wrap a provider client so that every call records a token-usage event.

The events go through an `OpenMonetize` delivery client (its queue, batching, retries and spool). The
wrapped client is the provider's own object behind a transparent proxy; recording costs microseconds on
the caller's thread, never waits for room in a full queue, and never raises into the caller.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from openmonetize.lib.client import OpenMonetize
from openmonetize.lib.event_rules import MAX_METADATA_JSON_BYTES, MAX_METADATA_KEYS
from openmonetize.lib.llm.proxies import COMPLETED, TrackedClient
from openmonetize.lib.llm.routes import SUPPORTED, detect_provider, routes_for
from openmonetize.lib.llm.usage import Observation, Usage
from openmonetize.models.token_usage_event import TokenUsageEvent

logger = logging.getLogger("openmonetize.llm")

ClientT = TypeVar("ClientT")

#: Ids too long for `event_id` (128 characters) are hashed into this UUIDv5 namespace instead.
RESPONSE_ID_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")
_MAX_EVENT_ID = 128

#: Metadata keys the tracker may add to the wrap's metadata (room is kept for them).
TRACKER_METADATA_KEYS = ("partial", "stream_end", "cost", "cache_creation_input_tokens")
_TRACKER_METADATA_BYTES = 128


def event_id_for_response(provider: str, response_id: str) -> str:
    """`provider:response_id`: the same response always maps to the same event id, so tracking it twice
    bills once, and the id leads straight to the provider's logs."""
    event_id = f"{provider}:{response_id}"
    return event_id if len(event_id) <= _MAX_EVENT_ID else str(uuid.uuid5(RESPONSE_ID_NAMESPACE, event_id))


class LLMTracker:
    """Wraps provider clients; create one per process (`create_llm_tracker`) and wrap per customer."""

    def __init__(self, client: OpenMonetize, *, feature_id: str, owns_client: bool) -> None:
        self.client = client
        self.feature_id = feature_id
        self._owns_client = owns_client

    def wrap(
        self,
        client: ClientT,
        customer_id: str,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        feature_id: str | None = None,
        team_id: str | None = None,
        provider: str | None = None,
    ) -> ClientT:
        """The same client, billing every tracked call to `customer_id`.

        About 15 us (one proxy object, and the validation of the arguments): wrapping per request is
        fine. `provider` overrides the provider recorded on events (detected from the client; OpenRouter
        from its base URL). Bad arguments raise here, before any LLM call is made.
        """
        provider = provider or detect_provider(client)
        routes = routes_for(provider or "", client)
        if provider is None or routes is None:
            raise TypeError(f"client={type(client).__module__}.{type(client).__qualname__} is not supported: "
                            f"wrap one of {SUPPORTED}")
        billing = _Billing(self.client, provider=provider, customer_id=customer_id, user_id=user_id,
                           team_id=team_id, feature_id=feature_id or self.feature_id,
                           metadata=dict(metadata) if metadata is not None else None)
        return cast(ClientT, TrackedClient(client, routes, billing, routes))

    def flush(self, timeout: float | None = None) -> bool:
        return self.client.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Shut down the delivery client if the tracker created it (a shared one belongs to its owner)."""
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


class _Billing:
    """One wrap's identity (who is billed, for what) and the recording of its calls."""

    __slots__ = ("client", "customer_id", "feature_id", "metadata", "provider", "team_id", "user_id")

    def __init__(self, client: OpenMonetize, *, provider: str, customer_id: str, user_id: str | None,
                 team_id: str | None, feature_id: str, metadata: dict[str, Any] | None) -> None:
        # A probe event checks every field now, with the usual messages (field, value, rule).
        TokenUsageEvent(customer_id=customer_id, user_id=user_id, team_id=team_id, feature_id=feature_id,
                        provider=provider, model="probe", input_tokens=0, output_tokens=0, metadata=metadata)
        if metadata:
            _check_metadata_room(metadata)
        self.client = client
        self.provider = provider
        self.customer_id = customer_id
        self.user_id = user_id
        self.team_id = team_id
        self.feature_id = feature_id
        self.metadata = metadata

    def record(self, observation: Observation, end: str, requested_model: Any) -> None:
        try:
            usage = observation.usage
            if usage is None:
                usage = Usage()
                end = end if end != COMPLETED else "no_usage"
            # the event validates (and so copies) its metadata: the wrap's dict is shared unless keys are added
            metadata = self.metadata
            if usage.extra or end != COMPLETED:
                metadata = {**(metadata or {}), **usage.extra}
                if end != COMPLETED:
                    metadata["partial"] = True
                    metadata["stream_end"] = end
            response_id = observation.response_id
            model = observation.model or (requested_model if isinstance(requested_model, str) else None)
            event = TokenUsageEvent(
                event_id=event_id_for_response(self.provider, response_id) if response_id else None,
                customer_id=self.customer_id, user_id=self.user_id, team_id=self.team_id,
                feature_id=self.feature_id, provider=self.provider, model=model or "unknown",
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens, reasoning_tokens=usage.reasoning_tokens,
                metadata=metadata or None,
            )
            self.client._enqueue(event, wait=False)
        except Exception:
            logger.exception("openmonetize: could not record LLM usage for customer_id=%r (provider %s, model %r)",
                             self.customer_id, self.provider, observation.model)


def _check_metadata_room(metadata: dict[str, Any]) -> None:
    """Keep room for the keys the tracker adds, so an event can never fail the size rules after the call."""
    max_keys = MAX_METADATA_KEYS - len(TRACKER_METADATA_KEYS)
    if len(metadata) > max_keys:
        raise ValueError(f"metadata has {len(metadata)} keys: at most {max_keys} are allowed in a wrap "
                         f"(the tracker may add {', '.join(TRACKER_METADATA_KEYS)})")
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    max_bytes = MAX_METADATA_JSON_BYTES - _TRACKER_METADATA_BYTES
    if size > max_bytes:
        raise ValueError(f"metadata is {size} bytes as JSON: at most {max_bytes} bytes are allowed in a wrap "
                         f"(the tracker keeps {_TRACKER_METADATA_BYTES} bytes for its own keys)")
