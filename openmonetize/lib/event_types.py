"""The event types, read from the generated `Event` union: one place, so a type added to openapi.yaml
reaches `openmonetize send` and `OpenMonetize.track` after `./generate.sh`, with no hand-written list."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from openmonetize.models import event as _event

#: The members of `Event`, in the spec's `oneOf` order (the order error messages list them in).
# `_EventMembers` is written by our own templates/files/model_oneof.mustache (the one whole-file template kept).
EVENT_MODELS: tuple[type[BaseModel], ...] = tuple(_event._EventMembers)


def _tag(model: type[BaseModel]) -> str:
    """A member's `event_type` value: the field's only (and default) value, as the spec's enum says."""
    default: Any = model.model_fields["event_type"].default
    if not isinstance(default, str):  # the union cannot discriminate such a member: fail at import, loudly
        raise TypeError(f"{model.__name__}.event_type has no single default value; cannot tell its type")
    return default


#: `event_type` value -> model, e.g. "TOKEN_USAGE" -> TokenUsageEvent.
MODELS_BY_TYPE: dict[str, type[BaseModel]] = {_tag(model): model for model in EVENT_MODELS}
