"""A request body model as JSON bytes; a batch of event models (`EventsApi.ingest`'s `IngestRequest`) by
orjson when the `orjson` extra is installed, byte for byte what pydantic writes.

Why: pydantic's serializer costs ~1.1 µs per event (a quarter of it in each tz-aware timestamp's
`utcoffset()`), more than a whole orjson + urllib3 request of the same batch (issue 14). orjson writes the
same values several times faster, but not always the same text, so it only gets what it provably writes as
pydantic does (`test/test_body_json.py` pins it with a property test):

- Each event is an instance of exactly one of the `Event` members (no subclass: it may serialize otherwise),
  written as pydantic writes it: its `__dict__` in the dict's order (the fields' order, unless one was
  deleted and set again), without the `None` values (`exclude_none`, as the generated client calls it, even
  in a required field left None by `model_construct`). An instance whose `__dict__` lacks a field or holds
  another key (`model_copy(update=...)` does not validate either) goes to pydantic.
- The member models are checked once, at the first body: no alias, serializer, computed or excluded field,
  no `ser_json_*` setting, and only str / int / float / datetime / `Literal` / `Dict[str, Any]` fields (with
  constraints); otherwise pydantic writes every body.
- `metadata` (the `Any` values) may hold only str, int, float, bool, None, and dicts, lists and tuples of
  them; anything else there (a Decimal, a datetime, an Enum...) goes to pydantic. So does a number field
  holding a bool, and a datetime whose UTC offset has seconds (pydantic drops them, orjson rounds them);
  the validated models hold neither (only `model_construct` can).
- orjson's options: `Z` for a zero UTC offset (as pydantic), subclasses of str / int / dict / list and
  dataclasses refused (pydantic may write those otherwise), no non-str keys (pydantic writes them as text).
  orjson refuses ints beyond 64 bits and text that is not UTF-8.

Whatever orjson cannot take that way, or any error, makes pydantic write the whole body, as before this
module: never a mix of the two, and pydantic's own errors and warnings when it has any. One difference is
left: an `orjson.Fragment` put in an event's field by `model_construct` (which skips validation) is written
as the JSON it holds, where pydantic refuses it.
"""

from __future__ import annotations

import datetime
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import TzInfo

from openmonetize.lib.event_types import EVENT_MODELS
from openmonetize.models.ingest_request import IngestRequest

__all__ = ["dumps"]

_NOT_LOADED: Any = object()

#: The orjson module, None when it is not installed; imported at the first body (its import costs ~12 ms).
#: Setting it to None makes pydantic write every body (the tests do, to run without it).
orjson: Any = _NOT_LOADED

#: a function from a list of event models to the dicts orjson writes for them (made at the first body, None
#: until then); it raises for anything else
_Builder = Callable[[list[Any]], list[dict[str, Any]]]
_build: _Builder | None = None

_PLAIN = frozenset({str, int, float, bool, type(None)})
_MINUTE = datetime.timedelta(minutes=1)
_FIXED_TYPES = (datetime.timezone, TzInfo)
_FIXED_OFFSETS: dict[datetime.tzinfo, bool] = {}  # fixed-offset tzinfo -> whether its offset is whole minutes
_PLAIN_TYPES = (str, int, float, datetime.datetime, type(None), Any)


def dumps(body: BaseModel) -> bytes:
    """The JSON of the request body `body` as pydantic writes it (by alias, `None` fields left out)."""
    if type(body) is IngestRequest and _encoder() is not None:
        written = _ingest_request(body)
        if written is not None:
            return written
    return body.__pydantic_serializer__.to_json(body, by_alias=True, exclude_none=True)


def _encoder() -> Any:
    """orjson, or None; the event builders are ready when it is not None."""
    global orjson, _build
    if orjson is _NOT_LOADED:
        try:
            import orjson as module

            orjson = module
        except ImportError:  # the `orjson` extra is not installed
            orjson = None
    if orjson is not None and _build is None:
        # the request model's one field, `events`, a list of `Event`s (written as each value's own model writes
        # it: templates/files/model_oneof.mustache); a member model pydantic writes otherwise is left out
        request = IngestRequest.model_fields.get("events")
        as_is = list(IngestRequest.model_fields) == ["events"] and request is not None \
            and _as_is("events", request) and _serialized_as_is(IngestRequest)
        _build = _builder([model for model in EVENT_MODELS if _supported(model)] if as_is else [])
    return orjson


def _ingest_request(body: BaseModel) -> bytes | None:
    """`{"events":[...]}` by orjson, or None: then pydantic writes it."""
    fields = body.__dict__
    events = fields.get("events")
    if len(fields) != 1 or type(events) is not list or _build is None:
        return None
    try:
        plain = _build(events)
        written: bytes = orjson.dumps({"events": plain}, option=orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_SUBCLASS
                                      | orjson.OPT_PASSTHROUGH_DATACLASS)
    except Exception:  # not a member, a value orjson refuses or that is not plain JSON...: pydantic decides
        return None
    return written


def _builder(models: list[type[BaseModel]]) -> _Builder:
    """The function that turns a list of instances of exactly `models` into the dicts orjson writes for them:
    a copy of each instance's `__dict__` without its `None` values. pydantic writes an instance the same way,
    its `__dict__` in the dict's order (which is the fields' unless one was deleted and set again), skipping
    what is not a field and (`exclude_none`) what is None. Straight-line code, compiled once: a loop over the
    fields, or a call per event, costs the batch more than orjson's whole encoding. It raises TypeError for
    an instance of another class, KeyError for an absent field, ValueError for a key that is not a field
    (then some field is absent, or the dict is longer), for an `Any` value that is not plain JSON and for a
    datetime whose offset is not whole minutes."""
    lines = ["def build(events):", "    out = []", "    append = out.append", "    for event in events:",
             "        kind = type(event)"]
    namespace: dict[str, Any] = {"plain": _plain_json, "flat": _PLAIN.issuperset, "whole": _whole_minutes,
                                 "UTC": datetime.timezone.utc, "PARSED_UTC": _parsed_utc()}
    for number, model in enumerate(models):
        namespace[f"M{number}"] = model
        lines.append(f"        {'elif' if number else 'if'} kind is M{number}:")
        lines.append("            c = event.__dict__.copy()")
        lines.append(f"            if len(c) != {len(model.model_fields)}: raise ValueError('not the fields')")
        for name, info in model.model_fields.items():
            if _holds(info.annotation, datetime.datetime):
                lines.append(f"            if (v := c[{name!r}]) is None: del c[{name!r}]")
                # (a value that is not a datetime has no tzinfo, or orjson refuses it: a datetime subclass, a time)
                # (UTC known by identity: the tzinfo the SDK gives a default timestamp, and pydantic a parsed one)
                lines.append("            elif (z := v.tzinfo) is not UTC and z is not PARSED_UTC and not whole(v):")
                lines.append("                raise ValueError('seconds')")
            elif _holds(info.annotation, Any):
                lines.append(f"            if (v := c[{name!r}]) is None: del c[{name!r}]")
                lines.append("            elif not (type(v) is dict and flat(map(type, v.values())) or plain(v)):")
                lines.append("                raise ValueError('not plain JSON')")
            elif _holds(info.annotation, int) or _holds(info.annotation, float):
                # a bool (only model_construct leaves one in a number's field): pydantic writes 1 or 1.0
                lines.append(f"            if (v := c[{name!r}]) is None: del c[{name!r}]")
                lines.append("            elif v is True or v is False: raise ValueError('a bool')")
            else:
                lines.append(f"            if c[{name!r}] is None: del c[{name!r}]")
    lines += ["        else:" if models else "        if True:", "            raise TypeError(kind)",
              "        append(c)", "    return out"]
    exec(compile("\n".join(lines), "<body_json>", "exec"), namespace)
    return typing.cast(_Builder, namespace["build"])


def _parsed_utc() -> datetime.tzinfo | None:
    """The tzinfo pydantic gives every timestamp it parses at UTC (`...Z`, `+00:00`): one shared `TzInfo`, known
    by identity at each event instead of looked up in `_whole_minutes` (events validated from text, such as
    `openmonetize send`'s); None if this pydantic makes a new one each time (then `_whole_minutes` sees them)."""
    parse = TypeAdapter(datetime.datetime).validate_python
    tz = parse("2000-01-01T00:00:00Z").tzinfo
    return tz if tz is not None and tz is parse("2000-01-01T00:00:00+00:00").tzinfo \
        and tz.utcoffset(None) == datetime.timedelta(0) else None


def _whole_minutes(value: datetime.datetime) -> bool:
    """Whether the datetime's UTC offset, if any, is a whole number of minutes: pydantic and orjson both write
    hours and minutes only, but pydantic drops the seconds and orjson rounds them (`+00:02:30`: `+00:02`,
    `+00:03`). A fixed-offset tzinfo (`datetime.timezone`, pydantic's `TzInfo` of a parsed string) is looked
    at once; another (zoneinfo...) at each value, its offset depending on the date."""
    tz = value.tzinfo
    if tz is None:
        return True  # naive (only `model_construct` leaves one): both write no offset
    whole = _FIXED_OFFSETS.get(tz)
    if whole is None:
        offset = value.utcoffset()
        whole = offset is not None and not offset % _MINUTE
        if type(tz) in _FIXED_TYPES and len(_FIXED_OFFSETS) < 10_000:
            _FIXED_OFFSETS[tz] = whole
    return whole


def _plain_json(value: Any) -> bool:
    """Whether `value` is made of str, int, float, bool, None, dicts, lists and tuples only (dict keys are
    orjson's to refuse: without `OPT_NON_STR_KEYS` it takes only str)."""
    kind = type(value)
    if kind is dict:
        values = value.values()
        return _PLAIN.issuperset(map(type, values)) or all(map(_plain_json, values))
    if kind is list or kind is tuple:
        return _PLAIN.issuperset(map(type, value)) or all(map(_plain_json, value))
    return kind in _PLAIN


#: model_config keys that leave serialization alone (the generated models set these); any other (`ser_json_*`,
#: `json_encoders`...) may change what pydantic writes
_CONFIG_AS_IS = frozenset({"defer_build", "validate_by_name", "validate_by_alias", "validate_assignment", "extra",
                           "protected_namespaces", "title"})


def _supported(model: type[BaseModel]) -> bool:
    """Whether pydantic writes `model`'s instances as their fields' values under the fields' own names,
    nothing else: what orjson does with the dicts `_builder` makes."""
    return _serialized_as_is(model) and all(_as_is(name, info) and _plain_type(info.annotation)
                                            for name, info in model.model_fields.items())


def _serialized_as_is(model: type[BaseModel]) -> bool:
    """No serializer, computed field, extra fields written or serialization setting on the model."""
    decorators = model.__pydantic_decorators__
    return not (decorators.field_serializers or decorators.model_serializers or model.__pydantic_computed_fields__
                or not _CONFIG_AS_IS.issuperset(model.model_config) or model.model_config.get("extra") == "allow")


def _as_is(name: str, info: FieldInfo) -> bool:
    """A field (or an `Annotated` FieldInfo) written under `name` (or no other name), not excluded, whose
    metadata are validation constraints only (`Strict`, lengths, bounds), which leave serialization alone."""
    return info.alias in (None, name) and info.serialization_alias in (None, name) and not info.exclude \
        and getattr(info, "exclude_if", None) is None \
        and all(isinstance(item, annotated_types.BaseMetadata) for item in info.metadata)


def _plain_type(annotation: Any) -> bool:
    """str, int, float, datetime, None, `Literal` strs, `Dict[str, Any]`, and unions and `Annotated`
    constraints of them: types whose values pydantic and orjson write alike (the values checked)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _plain_type(base) and all(_as_is("", item) if isinstance(item, FieldInfo)
                                         else isinstance(item, annotated_types.BaseMetadata) for item in extra)
    if origin in (Union, types.UnionType):
        return all(map(_plain_type, typing.get_args(annotation)))
    if origin is Literal:
        return all(type(value) is str for value in typing.get_args(annotation))
    if origin is dict:
        return typing.get_args(annotation) == (str, Any)
    return annotation in _PLAIN_TYPES


def _holds(annotation: Any, kind: Any) -> bool:
    """Whether a field's values may be (or hold) `kind`: anything (`Dict[str, Any]`), checked value by value;
    a datetime, whose offset is checked."""
    return annotation is kind or any(_holds(arg, kind) for arg in typing.get_args(annotation))
