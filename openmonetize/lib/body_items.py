"""A flattened body's array argument (`EventsApi.ingest(events=[...])`) made of model instances only is taken
as it is, without a second validation.

The generated API annotates such an argument `Annotated[Sequence[<Model>Input], <Model>Items, Field(...)]`
(templates: `api.mustache`, `partial_api_args.mustache`); `<Model>Items` is :func:`as_they_are` of the item
model. A model instance was validated when it was built (and on every assignment: the models validate
assignments), so `validate_call` would only confirm, item by item, what is already known. A list whose
elements are all of exactly the item model's types (a oneOf's members, or the model itself) is passed on
as a copy: no per-item work (an instance made with `model_construct`, which skips validation, was taken as
it is before too: the service validates every event on its own). Anything else, a single dict, a subclass,
a tuple, goes through the same validation as before, whole, so a dict still gets its `event_id` in place and
a bad one is refused with the same errors. The `Field`'s length limits come after this hook in the
annotation and hold either way (pydantic checks them after the items, as it did).
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import WrapValidator
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

__all__ = ["as_they_are", "members_of"]


def members_of(model: Any) -> tuple[type, ...]:
    """The classes whose instances are values of `model` (a generated model class, or a oneOf's runtime class,
    a `Union` to type checkers): a oneOf union's members (the `_<Name>Members` tuple
    templates/files/model_oneof.mustache writes beside it), or the model itself."""
    members = getattr(sys.modules[model.__module__], f"_{model.__name__}Members", None)
    return tuple(members) if members is not None else (model,)


def as_they_are(model: Any) -> WrapValidator:
    """The annotation that lets a list of `model` instances (exact types only) skip its item validation."""
    members = frozenset(members_of(model))

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if type(value) is list and members.issuperset(map(type, value)):
            return value.copy()  # a copy, as the validation would give: the caller's list stays the caller's
        return handler(value)

    return WrapValidator(validate)
