"""An event's JSON written straight from plain field values, by the rules the generated model states.

Building a pydantic model and serializing it costs the caller several microseconds per event; for the
common case (exact `str`s and `int`s within their bounds, plain metadata, the id and timestamp left to
the SDK) writing the JSON directly costs a fraction of that. The rules are not a second copy of the
spec's: they are read at import from the generated models' fields (types, `strict`, length and number
bounds, defaults), and the cross-field rules are `event_rules.check_fields` itself.

`encode` never refuses anything. Whatever it does not fully understand (another type, a timestamp given
by the caller other than a plain UTC string, an unknown constraint, a broken rule) returns None, and the
caller builds the model, which accepts or refuses it with its usual errors (field, value, rule).
test_event_json's property test pins that whenever `encode` answers, the model accepts the same values
and serializes them byte for byte the same.
"""

from __future__ import annotations

import datetime as _datetime
import functools
import inspect
import linecache
import re
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring  # JSON string escaping, in C (as the models' serializer escapes)
from typing import Any, Literal, NamedTuple, TypeVar, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.types import Strict
from pydantic_core import to_json

from openmonetize.lib import event_rules
from openmonetize.lib.event_ids import id_and_timestamp, utc_datetime
from openmonetize.lib.event_types import EVENT_MODELS

# What a field holds, as far as this module writes it.
_TEXT, _COUNT, _NUMBER, _CONSTANT, _ID, _NOW, _METADATA = range(7)

# The model validators every event model has (openapi.yaml's `x-sdk-validators` and the unknown-field
# guard): `encode` does what they do. A model with any other validator has no plan.
_KNOWN_MODEL_VALIDATORS = {"_sdk_before", "_sdk_after", "_refuse_unknown_fields"}
_MAX_FINITE_QUANTITY = event_rules._MAX_FINITE_QUANTITY


class _Field(NamedTuple):
    name: str
    key: str  # '"name":', as written before the value
    kind: int
    required: bool
    low: float  # bounds: of the length for text, of the value for counts (inclusive), of a number (exclusive)
    high: float
    constant: str | None  # the value of a `_CONSTANT` field


class Plan(NamedTuple):
    model: type[BaseModel]
    fields: tuple[_Field, ...]
    names: frozenset[str]
    write: Callable[[dict[str, Any], int], tuple[str, bytes] | None]  # compiled from `fields` by `source`
    namespace: dict[str, Any]  # what the compiled code refers to


def plan_for(model: type[BaseModel]) -> Plan | None:
    """The model's fields as `encode` writes them, or None when a field or validator is beyond it."""
    decorators = model.__pydantic_decorators__
    validators = decorators.model_validators
    if set(validators) != _KNOWN_MODEL_VALIDATORS or decorators.field_serializers \
            or decorators.model_serializers or model.model_config.get("extra") != "forbid":
        return None
    for name, rules in (("_sdk_before", "prepare_event"), ("_sdk_after", "check_event")):
        code = getattr(validators[name].func, "__code__", None)
        if code is None or rules not in code.co_names:
            return None  # the spec's `x-sdk-validators` name other rules than the ones this module applies
    validated = {name for dec in decorators.field_validators.values() for name in dec.info.fields}
    fields = [_field(name, info, name in validated) for name, info in model.model_fields.items()]
    if None in fields:
        return None
    return _compile(model, tuple(fields))  # type: ignore[arg-type]


def _field(name: str, info: FieldInfo, validated: bool) -> _Field | None:
    """How `encode` writes one field, or None if it cannot: then the model has no plan."""
    if info.alias not in (None, name) or info.serialization_alias not in (None, name):
        return None
    annotation, constraints, optional = _unwrap(info)
    key = f'"{name}":'
    if validated:  # a field with its own validators: only the timestamp, and only as the SDK fills it in
        ok = name == "timestamp" and annotation is _datetime.datetime and info.is_required() and not constraints
        return _Field(name, key, _NOW, False, 0, 0, None) if ok else None
    if typing.get_origin(annotation) is Literal:
        values = typing.get_args(annotation)
        ok = len(values) == 1 and type(values[0]) is str and info.default == values[0] and not constraints
        return _Field(name, key, _CONSTANT, False, 0, 0, values[0]) if ok else None
    if not optional and not info.is_required():
        return None  # a default other than None: not one this module knows how to write
    if annotation in (str, int):
        bounds = _bounds(constraints)
        if bounds is None:
            return None
        if name == "event_id" and annotation is str and not optional:
            return _Field(name, key, _ID, False, *bounds, None)
        return _Field(name, key, _TEXT if annotation is str else _COUNT, not optional, *bounds, None)
    if name == "metadata" and optional and not constraints and annotation == typing.Dict[str, Any]:  # noqa: UP006
        return _Field(name, key, _METADATA, False, 0, 0, None)
    if _is_union(annotation) and not optional and not constraints:  # float or int, strict, > the same bound
        members = {_number_member(arg) for arg in typing.get_args(annotation)}
        if len(members) == 2 and {member[0] for member in members if member} == {float, int} \
                and len({member[1] for member in members if member}) == 1:
            low = next(member[1] for member in members if member)
            return _Field(name, key, _NUMBER, True, low, float("inf"), None)
    return None


def _unwrap(info: FieldInfo) -> tuple[Any, list[Any], bool]:
    """(the type, every constraint on it, whether None is allowed) through `Optional[Annotated[...]]`."""
    annotation: Any = info.annotation
    constraints, optional = list(info.metadata), False
    if _is_union(annotation) and type(None) in typing.get_args(annotation):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation, optional = (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True  # noqa: UP007
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            constraints += item.metadata if isinstance(item, FieldInfo) else [item]
    return annotation, constraints, optional


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _number_member(annotation: Any) -> tuple[type, float] | None:
    """(float or int, the exclusive lower bound) of `Annotated[float | int, Field(strict=True, gt=...)]`."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    base, *extra = typing.get_args(annotation)
    constraints = [item for info in extra if isinstance(info, FieldInfo) for item in info.metadata]
    strict = [item for item in constraints if isinstance(item, Strict) and item.strict]
    gt = [item.gt for item in constraints if isinstance(item, annotated_types.Gt)]
    if base not in (float, int) or len(constraints) != 2 or len(strict) != 1 or len(gt) != 1:
        return None
    return base, gt[0]  # type: ignore[return-value]


def _bounds(constraints: list[Any]) -> tuple[float, float] | None:
    """(low, high), inclusive, from strict=True and min/max length or ge/le; None if anything else constrains
    the value, or if it is not strict (lax validation would convert values this module writes as they are)."""
    low, high, strict = 0.0, float("inf"), False
    for item in constraints:
        if isinstance(item, Strict):
            strict = item.strict
        elif isinstance(item, annotated_types.MinLen):
            low = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            high = item.max_length
        elif isinstance(item, annotated_types.Ge):
            low = item.ge  # type: ignore[assignment]
        elif isinstance(item, annotated_types.Le):
            high = item.le  # type: ignore[assignment]
        else:
            return None
    return (low, high) if strict else None


def encode(plan: Plan, values: dict[str, Any], now_ns: int | None = None) -> tuple[str, bytes] | None:
    """(event id, the event's JSON) for `values` (field name -> value, None for absent), or None: then build
    the model (`plan.model(**values)`) instead, which decides. `now_ns` is the clock reading an absent id
    and timestamp are made from (now if None)."""
    return plan.write(values, time.time_ns() if now_ns is None else now_ns)


def dump(model: type[BaseModel], values: dict[str, Any], now_ns: int) -> tuple[str, bytes]:
    """(event id, JSON) of the `model` event made of `values`: written directly when the plan can, else by
    the model itself, which raises its usual error (field, value, rule). The `track_*` methods run the same
    checks compiled by `method`, and the LLM tracker through `writer`; absent id and timestamp come from
    `now_ns` either way."""
    plan = PLANS[model]
    written = plan.write(values, now_ns) if plan is not None else None
    return written if written is not None else _built(model, values, now_ns)


_F = TypeVar("_F", bound=Callable[..., str])


def method(model: type[BaseModel], queue: str) -> Callable[[_F], _F]:
    """A `track_*` method made from its declaration (`@event_json.method(Model, "_enqueue_json")`): the
    declaration gives the signature and the documentation, which type checkers, `help` and `inspect` read;
    its body never runs. The method that runs is compiled from the model's plan: `dump`'s checks and
    writing on the keyword arguments themselves, then `self.<queue>(event id, JSON)`; the model decides
    when the plan declines. Against a method that calls `dump` it saves a dict of the arguments read back
    with a call per field, a check of its keys and two calls (bench/track.py measures the method)."""

    def made(declared: _F) -> _F:
        names = [name for name, parameter in inspect.signature(declared).parameters.items()
                 if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
        plan = PLANS[model]
        compiled: Any
        if plan is not None and set(names) == {field.name for field in plan.fields if field.kind != _CONSTANT}:
            namespace = dict(plan.namespace)
            _run(source(plan, queue), f"<event_json: {declared.__qualname__}>", namespace)
            compiled = namespace["method"]
        else:  # no plan, or a declaration the plan does not match (test_track_signatures says which): the model
            defaults = dict(declared.__kwdefaults__ or {})  # (a `**values` function has no defaults of its own)

            def compiled(self: Any, **values: Any) -> str:
                return getattr(self, queue)(*_built(model, {**defaults, **values}, time.time_ns()))  # type: ignore[no-any-return]
        compiled.__kwdefaults__ = dict(declared.__kwdefaults__ or {})
        return functools.update_wrapper(compiled, declared)  # type: ignore[return-value]

    return made


def _built(model: type[BaseModel], values: dict[str, Any], now_ns: int) -> tuple[str, bytes]:
    """The model decides: the event built from `values`, or its usual error."""
    fields = dict(values)
    if fields.get("event_id") is None:  # (None only: an empty or bad id is the model's to refuse)
        fields["event_id"] = id_and_timestamp(now_ns)[0]
    if fields.get("timestamp") is None:
        fields["timestamp"] = utc_datetime(now_ns)
    event = model(**fields)
    return event.event_id, event.__pydantic_serializer__.to_json(event, exclude_none=True)  # type: ignore[attr-defined]


def writer(model: type[BaseModel]) -> Callable[..., tuple[str, bytes]]:
    """`dump` with the values as keyword arguments: `writer(model)(now_ns, **values)` is `dump(model, values,
    now_ns)` without the dict read back a key at a time (what the LLM tracker calls: fewer steps after an HTTP
    call, whose code and data have the caches). Every field is a keyword, None when absent; the model decides
    when the plan declines (and raises its usual error)."""
    plan = PLANS[model]
    if plan is None:
        def built(now_ns: int, **values: Any) -> tuple[str, bytes]:
            return _built(model, values, now_ns)
        return built
    namespace = dict(plan.namespace)
    _run(source(plan, keywords=True), f"<event_json writer for {model.__name__}>", namespace)
    compiled = namespace["write_keywords"]
    compiled.__kwdefaults__ = {field.name: None for field in plan.fields if field.kind != _CONSTANT}
    return compiled  # type: ignore[no-any-return]


def source(plan: Plan, queue: str | None = None, *, keywords: bool = False) -> str:
    """The Python source of `plan.write` (or, with `queue`, of the `method` that passes the event to
    `self.<queue>`): the plan's fields unrolled into straight-line checks, then one f-string per run of
    required fields (a loop over the fields costs the caller more than all the checks; see bench/track.py).
    The fields are the function's local variables, under their own names: its other names start with `_`,
    which no field's can (and `self`, which is not a field). With `keywords` (and no `queue`), the source of a
    `writer`: the `method`'s checks and writing, returning (event id, JSON) instead of queueing it."""
    keywords = keywords or queue is not None
    decline = "raise _Decline" if keywords else "return None"
    checks, pieces = [], []  # pieces: (the variable that must not be None, or "", an f-string template)
    event_id = ""
    defaulted = []  # the fields whose absence takes the clock's reading (the id, the timestamp)
    for field in plan.fields:
        name, key, kind, required, low, high, constant = field
        if kind == _CONSTANT:  # present (even as None) it must be the constant itself; not a keyword argument
            if not keywords:
                checks.append(f"if {name!r} in _values and (type(_values[{name!r}]) is not str or "
                              f"_values[{name!r}] != {constant!r}): return None")
            pieces.append(("", _braces(key + encode_basestring(str(constant)))))
            continue
        if not keywords:  # missing: KeyError
            checks.append(f"{name} = _values[{name!r}]" if required else f"{name} = _get({name!r})")
        if kind in (_ID, _NOW):
            defaulted.append(name)
        if kind == _ID:  # (the argument itself stays as given: the model gets it if it decides)
            checks.append(f"if {name} is None: _id = _new_id")
            checks.append(f"elif type({name}) is not str or not {low!r} <= len({name}) <= {high!r}: {decline}")
            checks.append(f"else: _id = {name}")
            pieces.append(("", key + "{_enc(_id)}"))
            event_id = "_id"
        elif kind == _NOW:  # (`write` also takes a plain UTC string: see `_timestamp_text`)
            checks.append(f"if {name} is not None: {decline}" if keywords else
                          f"if {name} is not None: _now_text = _timestamp_text({name}) or _decline()")
            pieces.append(("", key + '"{_now_text}"'))
        elif kind == _METADATA:  # checked by the metadata rules here, once (`check_fields` then skips it)
            checks.append(f"if {name} is not None: _meta = _metadata_json({name})")
            pieces.append((name, key + "{_meta}"))
        else:
            check, piece = _value_code(field, decline)
            checks.append(check)
            pieces.append(piece)
    if not event_id or pieces[0][0]:
        raise ValueError("a plan needs an event_id and a first field that is always written")
    runs = [["", "{{" + pieces[0][1]]]  # consecutive unconditional pieces joined into one f-string
    for condition, template in pieces[1:]:
        if condition or runs[-1][0]:
            runs.append([condition, "," + template])
        else:
            runs[-1][1] += "," + template
    writes = [f"_text = f{runs[0][1]!r}"]
    writes += [f"if {condition} is not None: _text += f{template!r}" if condition else f"_text += f{template!r}"
               for condition, template in runs[1:]]
    rules = _rules_call({field.name for field in plan.fields if field.kind != _METADATA})
    body = "\n        ".join([*checks, *writes, rules,
                               "_body = (_text + '}').encode()" if keywords else
                               f"return {event_id}, (_text + '}}').encode()"])
    if keywords:
        names = [field.name for field in plan.fields if field.kind != _CONSTANT]
        values = "{" + ", ".join(f"{name!r}: {name}" for name in names) + "}"
        built, written = (f"self.{queue}(*_built(_model, {values}, _now_ns))", f"self.{queue}({event_id}, _body)") \
            if queue is not None else (f"_built(_model, {values}, _now_ns)", f"{event_id}, _body")
        body = "\n    ".join([
            *(["_now_ns = _time_ns()"] if queue is not None else []),
            "_new_id, _now_text = _id_and_timestamp(_now_ns)  # one reading, one lookup (unused if given: harmless)",
            "try:",
            "    " + body,
            "except Exception:  # declined, a broken rule, text that is not UTF-8...: the model decides",
            f"    return {built}",
            f"return {written}  # outside the try: what queueing raises is the caller's",
        ])
        if queue is None:
            return f"def write_keywords(_now_ns, *, {', '.join(names)}):  # the defaults: None\n    {body}\n"
        return f"def method(self, *, {', '.join(names)}):  # the defaults: the declaration's\n    {body}\n"
    body = "\n    ".join([
        "if not _values.keys() <= _names: return None",
        "_get = _values.get",
        f"if {' or '.join(f'_get({name!r}) is None' for name in defaulted) or 'False'}:  # one reading, if used",
        "    _new_id, _now_text = _id_and_timestamp(now_ns)",
        "try:",
        "    " + body,
        "except Exception: return None  # a missing field, a broken rule, text that is not UTF-8...: the model decides",
    ])
    return f"def write(_values, now_ns):\n    {body}\n"


#: each shape of `bound` writer's maker, compiled once: (model, its constant fields, its parameters) -> maker
#: (a few per process: the LLM tracker binds one shape)
_MAKERS: dict[tuple[type[BaseModel], tuple[str, ...], tuple[str, ...]], Callable[..., Any]] = {}


def bound(model: type[BaseModel], constants: Mapping[str, Any],
          parameters: Sequence[str]) -> Callable[..., tuple[str, bytes] | None] | None:
    """A writer of `model` events that share `constants` (field name -> value, None for absent), checked and
    written once, here, and differ in `parameters`: `bound(...)(now_ns, *values)`, the values in that order.
    A parameter is a field's name, or `metadata.KEY`: a key added after the constant metadata's, with a `str`
    value, the metadata rules then checked by arithmetic (its key count here, its size per event from the
    lengths of the texts). The id and timestamp are made from `now_ns`; every other field is absent.

    It answers (event id, JSON) or None: then `writer(model)` on all the fields decides (and the model names
    what breaks a rule), so it need not know every rule's error, only when all of them hold. None instead of
    a writer: the constants are beyond it (a broken rule, metadata that is not flat, text that is not UTF-8),
    and every event of theirs would be the writer's anyway. Made for the LLM tracker, whose wrap fixes who
    pays and what for (bench/llm_overhead.py --parts: the write of a plain call's event)."""
    shape = (model, tuple(constants), tuple(parameters))  # (in the caller's order: a wrap binds per request)
    maker = _MAKERS.get(shape)
    if maker is None:
        plan = PLANS[model]
        if plan is None:
            return None
        names = tuple(field.name for field in plan.fields if field.name in constants)
        if len(names) != len(constants):
            raise ValueError(f"constants {sorted(set(constants) - set(names))}: not fields of {model.__name__}")
        namespace = dict(plan.namespace)
        _run(bound_source(plan, names, shape[2]), f"<event_json bound writer for {model.__name__}: {names}>",
             namespace)
        maker = _MAKERS[shape] = namespace["make"]
    return maker(**constants)  # type: ignore[no-any-return]


def bound_source(plan: Plan, constants: Sequence[str], parameters: Sequence[str]) -> str:
    """The source of a `bound` writer's maker: `make(**constants)` checks them with `source`'s checks and
    writes the runs of the event's text they fix (once per wrap), then returns the writer of the rest, which
    checks the parameters as `source` does and joins their texts with those runs."""
    fields = {field.name: field for field in plan.fields}
    keys = [parameter[len("metadata."):] for parameter in parameters if parameter.startswith("metadata.")]
    arguments: list[str] = []  # the writer's, in order (a metadata key's value is `_mN`)
    for parameter in parameters:
        if parameter.startswith("metadata."):
            arguments.append(f"_m{len([a for a in arguments if a.startswith('_m')])}")
        elif parameter in fields and fields[parameter].kind in (_TEXT, _COUNT, _NUMBER) \
                and parameter not in constants:
            arguments.append(parameter)
        else:
            raise ValueError(f"parameter {parameter!r}: not a text, count or number field, nor metadata.KEY")
    if len(set(parameters)) != len(parameters) or (keys and "metadata" not in fields):
        raise ValueError(f"parameters {parameters!r}: repeated, or metadata keys of a model without metadata")
    for name in constants:
        kind = fields[name].kind
        if not (kind == _METADATA or (kind in (_TEXT, _COUNT, _NUMBER) and name not in _RULE_FIELDS)):
            raise ValueError(f"constant {name!r}: only metadata and text, count or number fields outside the "
                             f"cross-field rules can be fixed")
    make_checks: list[str] = []
    pieces: list[tuple[bool, str, str]] = []  # (made by `make`, the variable that must not be None or "", template)
    write_checks: list[str] = []
    for field in plan.fields:
        name, key, kind = field.name, field.key, field.kind
        comma = "," if pieces else "{{"  # (the first field opens the object)
        if kind == _CONSTANT:
            pieces.append((True, "", comma + _braces(key + encode_basestring(str(field.constant)))))
        elif kind == _ID:  # (an id `event_ids` made: hex digits and dashes, nothing to escape)
            pieces.append((False, "", comma + key + '"{_id}"'))
        elif kind == _NOW:
            pieces.append((False, "", comma + key + '"{_now_text}"'))
        elif kind == _METADATA and keys:  # the constant metadata's text, then each key's value, then "}"
            make_checks.append(f"_mprefix, _msize = _metadata_base({name if name in constants else 'None'}, "
                               f"{tuple(keys)!r})")
            pieces.append((True, "", comma + key + "{_mprefix}"))
            template = "".join((_braces(_metadata_key_text(key, True)) if i else "") + f"{{_mt{i}}}"
                               for i, key in enumerate(keys)) + "}}"  # (the first key is in `_mprefix`)
            pieces.append((False, "", template))
            for i in range(len(keys)):
                write_checks += [f"if type(_m{i}) is not str: return None", f"_mt{i} = _enc(_m{i})"]
            sizes = " + ".join(f"(len(_mt{i}) if _mt{i}.isascii() else len(_mt{i}.encode()))" for i in range(len(keys)))
            write_checks.append(f"if _msize + {sizes} > _MAX_METADATA_BYTES: return None")
        elif kind == _METADATA:
            if name in constants:  # checked by the metadata rules once, here
                make_checks.append(f"if {name} is not None: _meta = _metadata_json({name})")
                pieces.append((True, name, comma + key + "{_meta}"))
        elif name in constants or name in arguments:
            check, (condition, template) = _value_code(field, "return None")
            (make_checks if name in constants else write_checks).append(check)
            pieces.append((name in constants, condition, comma + template))
        elif field.required:
            raise ValueError(f"field {name!r} is required: a constant or a parameter")
    # the runs of `make`'s pieces, each one variable (`_gN`) of the writer's text
    gaps: list[str] = []
    writes: list[tuple[str, str]] = []  # the writer's: (condition, template), joined as `source` joins them
    after_gap = False
    for made, condition, template in pieces:
        if made:
            if not after_gap:  # a new run
                gaps.append(f"_g{len(gaps)}")
                writes.append(("", "{" + gaps[-1] + "}"))
            line = f"{gaps[-1]} += f{template!r}"
            make_checks.append(f"if {condition} is not None: {line}" if condition else line)
        else:
            writes.append((condition, template))
        after_gap = made
    make_checks[:0] = [f"{gap} = ''" for gap in gaps]
    runs: list[list[str]] = []
    for condition, template in writes:
        if condition or not runs or runs[-1][0]:
            runs.append([condition, template])
        else:
            runs[-1][1] += template
    text = [f"_text = f{runs[0][1]!r}" if not runs[0][0] else "_text = ''"]
    text += [f"if {condition} is not None: _text += f{template!r}" if condition else f"_text += f{template!r}"
             for condition, template in (runs[1:] if not runs[0][0] else runs)]
    rules = _rules_call(set(arguments))
    make_checks.append(f"({' + '.join(gaps)}).encode()  # UTF-8, or the model decides")
    write_body = "\n            ".join([
        *write_checks, *([rules] if rules else []),
        "_id, _now_text = _id_and_timestamp(_now_ns)", *text, "return _id, (_text + '}').encode()"])
    make_body = "\n        ".join(make_checks)
    return (f"def make({', '.join(['*', *constants]) if constants else ''}):\n"
            f"    try:\n        {make_body}\n"
            f"    except Exception:  # a constant beyond the plan: every event of theirs is the writer's\n"
            f"        return None\n\n"
            f"    def bound({', '.join(['_now_ns', *arguments])}):\n"
            f"        try:\n            {write_body}\n"
            f"        except Exception:  # the writer decides, the model names what breaks a rule\n"
            f"            return None\n\n"
            f"    return bound\n")


def _metadata_key_text(key: str, after: bool) -> str:
    """A metadata key's JSON as written before its value: `"key":`, after a comma if other keys come first."""
    return ("," if after else "") + encode_basestring(key) + ":"


def _metadata_base(metadata: Any, keys: tuple[str, ...]) -> tuple[str, int]:
    """For `bound`: the metadata's JSON up to the first key's value (flat metadata then `keys` after its
    own, which it may not have), and the size in bytes of what every event's metadata has but the keys'
    values; the metadata rules (`event_rules.check_metadata`) checked on it, and its key count with `keys`."""
    metadata = {} if metadata is None else metadata
    if type(metadata) is not dict or len(metadata) + len(keys) > event_rules.MAX_METADATA_KEYS:
        raise _Decline
    for key, value in metadata.items():
        if type(key) is not str or type(value) not in _FLAT or key in keys:
            raise _Decline
    text = event_rules.check_metadata(metadata)
    prefix = text[:-1] + _metadata_key_text(keys[0], bool(metadata))
    fixed = prefix + "".join(_metadata_key_text(key, True) for key in keys[1:]) + "}"
    return prefix, len(fixed.encode())


def _value_code(field: _Field, decline: str) -> tuple[str, tuple[str, str]]:
    """A text, count or number field's check (a line of code running `decline` when the value is beyond the
    plan) and its piece of the event's text (the variable that must not be None, or "", and an f-string
    template): `source`'s and `bound`'s, for arguments and for constants alike."""
    name, key, kind, required, low, high, _ = field
    if kind == _NUMBER:  # an int within the float range, or a float, which the models' serializer writes
        return (f"if not ((type({name}) is int and {low!r} < {name} <= _MAX_FINITE) or "
                f"(type({name}) is float and {low!r} < {name} < _INF)): {decline}",
                ("", key + f"{{{name} if type({name}) is int else _to_json({name}).decode()}}"))
    assert kind in (_TEXT, _COUNT), field
    measure = f"len({name})" if kind == _TEXT else name
    test = f"type({name}) is not {'str' if kind == _TEXT else 'int'} or not {low!r} <= {measure} <= {high!r}"
    return (f"if {test}: {decline}" if required else f"if {name} is not None and ({test}): {decline}",
            ("" if required else name, key + (f"{{_enc({name})}}" if kind == _TEXT else f"{{{name}}}")))


# the fields `check_fields` reads, in its parameters' order (the other fields go to its `**_other`)
_RULES_ORDER = tuple(name for name, parameter in inspect.signature(event_rules.check_fields).parameters.items()
                     if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
_RULE_FIELDS = frozenset(_RULES_ORDER)


def _rules_call(names: set[str]) -> str:
    """The call of `check_fields` on those of `names` it reads ("" if none): by position, None for the
    ones before them it also reads (a keyword argument costs the caller a keyword match per argument
    and cold caches after an HTTP call make that microseconds; see bench/llm_overhead.py --parts)."""
    present = [name in names for name in _RULES_ORDER]
    if not any(present):
        return ""
    last = max(i for i, here in enumerate(present) if here)
    arguments = [name if here else "None" for name, here in zip(_RULES_ORDER, present, strict=True)][:last + 1]
    return f"_check_fields({', '.join(arguments)})"


class _Decline(Exception):
    """A `method`'s way out of its checks to the model (only on the path that builds the model)."""


_FLAT = frozenset({str, int, bool, type(None)})  # metadata values the `json` encoder writes as the models do


def _metadata_json(metadata: Any) -> str:
    """`metadata`'s JSON as the models write it, checked by the metadata rules (`event_rules.check_metadata`);
    raises `_Decline` for what is not a dict of `str` keys (the model refuses it, or converts it).

    For flat metadata (values of exact `str`, `int`, `bool` or None) the text the rules encode to measure is
    the models' own (test_event_json pins it), so it is encoded once; anything else is written by
    pydantic-core, as the models' serializer writes it."""
    if type(metadata) is not dict:
        raise _Decline
    flat = True
    for key, value in metadata.items():
        if type(key) is not str:
            raise _Decline
        if type(value) not in _FLAT:
            flat = False
    encoded = event_rules.check_metadata(metadata)
    return encoded if flat else to_json(metadata).decode()


def _decline() -> str:
    raise _Decline  # (`write` answers None for any exception)


# `YYYY-MM-DDTHH:MM:SS[.f]Z`, ASCII digits, hours 00-23, minutes and seconds 00-59, 1 to 6 fraction digits
_PLAIN_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.([0-9]{1,6}))?Z")
_real_dates: set[str] = set()  # "YYYY-MM-DD" seen to be a calendar date (a usage log repeats its dates)
# `_PLAIN_UTC` is a fixed 19-character head ("YYYY-MM-DDTHH:MM:SS") then a tail ("Z" or ".<1 to 6 digits>Z"), so a
# string whose head and tail were both seen in plain timestamps (on a real date) is one too, and its text is
# the head's then the tail's: kept here, a usage log repeating its seconds and fractions, to skip the match
_plain_heads: set[str] = set()
_tail_texts: dict[str, str] = {}  # tail -> what the models write for it (".050Z" -> ".050000Z", ".000Z" -> "Z")


def _timestamp_text(value: Any) -> str | None:
    """The text the models write for a timestamp given as this string, when the string is a plain UTC one
    (`_PLAIN_UTC` on a real calendar date, year 1 or later): the fraction padded to 6 digits, or none when
    it is zero, as pydantic writes a datetime's microseconds. None for anything else (an offset, a
    lowercase t or z, more than 6 fraction digits, a leap second...): the model decides."""
    if type(value) is not str:
        return None
    tail = _tail_texts.get(value[19:])
    if tail is not None and value[:19] in _plain_heads:
        return value[:19] + tail
    match = _PLAIN_UTC.fullmatch(value)
    if match is None:
        return None
    date = value[:10]
    if date not in _real_dates:
        try:
            _datetime.date.fromisoformat(date)
        except ValueError:
            return None
        if len(_real_dates) > 10_000:
            _real_dates.clear()
        _real_dates.add(date)
    fraction = match.group(1)
    if fraction is None or (len(fraction) == 6 and fraction != "000000"):
        tail = value[19:]
    else:
        tail = f".{fraction:0<6}Z" if fraction.strip("0") else "Z"
    if len(_plain_heads) > 10_000:
        _plain_heads.clear()
    if len(_tail_texts) > 10_000:
        _tail_texts.clear()
    _plain_heads.add(value[:19])
    _tail_texts[value[19:]] = tail
    return value[:19] + tail


def _braces(text: str) -> str:
    """Literal text for an f-string template."""
    return text.replace("{", "{{").replace("}", "}}")


def _compile(model: type[BaseModel], fields: tuple[_Field, ...]) -> Plan:
    namespace: dict[str, Any] = {
        "_id_and_timestamp": id_and_timestamp, "_enc": encode_basestring, "_to_json": to_json,
        "_check_fields": event_rules.check_fields, "_time_ns": time.time_ns, "_MAX_FINITE": _MAX_FINITE_QUANTITY,
        "_INF": float("inf"), "_Decline": _Decline, "_built": _built, "_model": model,
        "_metadata_json": _metadata_json, "_timestamp_text": _timestamp_text, "_decline": _decline,
        "_metadata_base": _metadata_base, "_MAX_METADATA_BYTES": event_rules.MAX_METADATA_JSON_BYTES}
    plan = Plan(model, fields, frozenset(field.name for field in fields), _no_write, namespace)
    namespace["_names"] = plan.names
    _run(source(plan), f"<event_json for {model.__name__}>", namespace)
    return plan._replace(write=namespace.pop("write"))


def _run(text: str, filename: str, namespace: dict[str, Any]) -> None:
    """Define the generated `text` in `namespace`, its lines kept for tracebacks and debuggers (as
    dataclasses and attrs keep theirs): a frame of the compiled code shows the line it ran."""
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    exec(compile(text, filename, "exec"), namespace)


def _no_write(values: dict[str, Any], now_ns: int) -> None:
    raise AssertionError("replaced by the compiled function")


#: every event model's plan (None: that model is always built)
PLANS: dict[type[BaseModel], Plan | None] = {model: plan_for(model) for model in EVENT_MODELS}
