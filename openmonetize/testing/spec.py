"""The ingest contract, compiled from ``openapi.yaml`` into request validators.

The local server checks requests against the spec itself, never against the SDK's
generated models, so that the client and the server keep each other honest.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from rfc3339_validator import validate_rfc3339  # type: ignore[import-untyped]

__all__ = ["INGEST_PATH", "IngestContract", "Problem", "compact_json", "find_spec", "load_contract"]

INGEST_PATH = "/v1/events/ingest"

# Cross-field rules that the spec states only in prose: (part, whole) pairs where the
# part is counted inside the whole and so may not exceed it.
_PART_OF = (("reasoning_tokens", "output_tokens"), ("cached_input_tokens", "input_tokens"))
_MAX_JSON_BYTES = "x-max-json-bytes"
_MAX_MESSAGE_CHARS = 300
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def find_spec() -> Path:
    """Locate ``openapi.yaml``: the copy shipped in the package, else the repository root."""
    here = Path(__file__).resolve()
    candidates = (here.parents[1] / "openapi.yaml", here.parents[2] / "openapi.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"openapi.yaml not found (looked in {searched})")


@dataclass(frozen=True)
class Problem:
    """One reason a request is refused, shaped like the spec's ErrorDetail."""

    path: str
    message: str

    def as_detail(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


def _is_rfc3339(instance: object) -> bool:
    # RFC 3339 allows lower-case "t" and "z"; the validator only knows upper case.
    return not isinstance(instance, str) or bool(validate_rfc3339(instance.upper()))


def _format_checker() -> FormatChecker:
    """OAS 3.0 numeric formats plus ``date-time``, which OAS30Validator leaves unchecked."""
    checker = FormatChecker(formats=())
    for name, (func, raises) in oas30_format_checker.checkers.items():
        checker.checks(name, raises)(func)
    checker.checks("date-time")(_is_rfc3339)
    return checker


_Scalar = (str, int, float, bool)
_MEMO_LIMIT = 100_000


@dataclass(frozen=True)
class _EventRules:
    """How one event type is checked; every schema here comes straight from the spec."""

    shape: Any  # the event schema without its property keywords
    properties: Mapping[str, Any]  # property name -> validator for its own schema
    closed: bool  # additionalProperties is false
    json_limits: Mapping[str, int]
    part_of: Sequence[tuple[str, str]]


class IngestContract:
    """Validators for ``POST /v1/events/ingest``, built once from the parsed spec.

    The envelope is checked without descending into the events, then each event is
    checked against the single schema its discriminator names, never through ``oneOf``.

    Each event is split into its object-level keywords (type, required, ...) and one
    check per property value; JSON Schema evaluates ``properties`` independently per
    property and ``additionalProperties: false`` only compares names, so the verdict is
    the same as validating the event whole. The split exists for speed: jsonschema's
    per-property descent dominates the cost, while scalar verdicts can be memoised per
    (property, type, value), and batches repeat most of their values.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        components = spec["components"]["schemas"]
        formats = _format_checker()
        operation = spec["paths"][INGEST_PATH]["post"]
        request = _resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])

        envelope = copy.deepcopy(request)
        item_ref = envelope["properties"]["events"].pop("items")
        self._envelope = _validator(envelope, components, formats)

        event_schema = _resolve(spec, item_ref)
        self.discriminator: str = event_schema["discriminator"]["propertyName"]
        self._rules: dict[str, _EventRules] = {}
        for event_type, ref in event_schema["discriminator"]["mapping"].items():
            schema = _resolve(spec, {"$ref": ref})
            properties: dict[str, Any] = schema.get("properties", {})
            additional = schema.get("additionalProperties", True)
            if not isinstance(additional, bool):
                raise ValueError(f"{ref}: only boolean additionalProperties is supported")
            shape = {key: value for key, value in schema.items() if key not in ("properties", "additionalProperties")}
            self._rules[event_type] = _EventRules(
                shape=_validator(shape, components, formats),
                closed=not additional,
                properties={
                    name: _validator(_resolve(spec, prop), components, formats) for name, prop in properties.items()
                },
                json_limits={
                    name: int(prop[_MAX_JSON_BYTES]) for name, prop in properties.items() if _MAX_JSON_BYTES in prop
                },
                part_of=[(p, w) for p, w in _PART_OF if p in properties and w in properties],
            )
        self.event_types: tuple[str, ...] = tuple(self._rules)
        self._memo: dict[tuple[str, str, type, object], tuple[Problem, ...]] = {}

    def check_request(self, body: Any, limit: int = 100) -> list[Problem]:
        """Return up to ``limit`` problems with a parsed request body; empty means valid."""
        problems = list(_problems(self._envelope.iter_errors(body), prefix=""))
        if problems:
            return problems[:limit]
        for index, event in enumerate(body["events"]):
            problems.extend(self._check_event(event, f"events[{index}]"))
            if len(problems) >= limit:
                break
        return problems[:limit]

    def _check_event(self, event: Any, path: str) -> list[Problem]:
        if not isinstance(event, dict):
            return [Problem(path, _clip(f"{event!r} is not of type 'object'"))]
        kind = event.get(self.discriminator)
        if not isinstance(kind, str) or kind not in self._rules:
            allowed = ", ".join(self.event_types)
            found = "is missing" if kind is None else _clip(f"{kind!r} is not a known event type")
            return [Problem(f"{path}.{self.discriminator}", f"{found}; must be one of {allowed}")]
        rules = self._rules[kind]

        problems = list(_problems(rules.shape.iter_errors(event), prefix=path))
        for name, value in event.items():
            validator = rules.properties.get(name)
            if validator is not None:
                for problem in self._check_value(kind, name, validator, value):
                    problems.append(Problem(_concat(path, problem.path), problem.message))
            elif rules.closed:
                problems.append(Problem(_join(path, [name]), f"{name!r} is not an allowed property"))
        if problems:
            return problems  # the prose rules below assume well-typed values

        for part, whole in rules.part_of:
            part_value, whole_value = event.get(part), event.get(whole)
            if part_value is not None and whole_value is not None and part_value > whole_value:
                problems.append(Problem(f"{path}.{part}", f"{part_value} exceeds {whole} ({whole_value})"))
        for name, max_bytes in rules.json_limits.items():
            value = event.get(name)
            if value is not None:
                size = len(compact_json(value).encode("utf-8"))
                if size > max_bytes:
                    message = f"{size} bytes as compact JSON exceeds the maximum of {max_bytes}"
                    problems.append(Problem(f"{path}.{name}", message))
        return problems

    def _check_value(self, kind: str, name: str, validator: Any, value: object) -> tuple[Problem, ...]:
        """Problems with one property value, with paths relative to the event."""
        if not isinstance(value, _Scalar):
            return tuple(_problems(validator.iter_errors(value), prefix=_join("", [name])))
        key = (kind, name, type(value), value)  # the type keeps 1, 1.0 and True apart
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            found = tuple(_problems(validator.iter_errors(value), prefix=_join("", [name])))
            self._memo[key] = found
        return found


def compact_json(value: Any) -> str:
    """The serialization the spec's ``x-max-json-bytes`` limit is measured on."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@functools.cache
def load_contract(path: Path | None = None) -> IngestContract:
    """Parse the spec once per process; every server shares the compiled validators."""
    text = (path or find_spec()).read_text(encoding="utf-8")
    return IngestContract(yaml.safe_load(text))


def _resolve(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref`` chains such as ``#/components/schemas/Event``."""
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"unsupported or circular $ref: {ref}")
        seen.add(ref)
        node: Any = spec
        for token in ref[2:].split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        schema = node
    return dict(schema)


def _validator(schema: Mapping[str, Any], components: Any, formats: FormatChecker) -> Any:
    # Nested "#/components/..." references resolve against the validator's root schema,
    # so the components ride along under their usual key (unknown keywords are ignored).
    root = {**schema, "components": {"schemas": components}}
    return OAS30Validator(root, format_checker=formats)


def _problems(errors: Iterable[ValidationError], prefix: str) -> Iterator[Problem]:
    """Turn jsonschema errors into problems whose path names the offending field."""
    reported: set[tuple[str, str]] = set()
    for error in errors:
        path = _join(prefix, error.absolute_path)
        instance: Any = error.instance
        keyword_value: Any = error.validator_value
        if error.validator == "required" and isinstance(instance, dict):
            # One error per missing property, in the order of the schema's list.
            for name in keyword_value:
                if name not in instance and (path, name) not in reported:
                    reported.add((path, name))
                    yield Problem(_join(path, [name]), f"{name!r} is a required property")
                    break
        elif error.validator == "additionalProperties" and isinstance(instance, dict):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            for name in sorted(set(instance) - set(known)):
                yield Problem(_join(path, [name]), f"{name!r} is not an allowed property")
        elif error.validator in ("minItems", "maxItems") and isinstance(instance, list):
            # jsonschema would print the whole array, possibly 1000 events long.
            bound = "maximum" if error.validator == "maxItems" else "minimum"
            message = f"has {len(instance)} items; the {bound} is {keyword_value}"
            yield Problem(path or "$", message)
        else:
            yield Problem(path or "$", _clip(error.message))


def _concat(prefix: str, path: str) -> str:
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def _join(prefix: str, parts: Iterable[str | int]) -> str:
    path = prefix
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.match(part):
            path += f".{part}" if path else part
        else:
            path += f"[{json.dumps(part)}]"
    return path


def _clip(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 3] + "..."
