"""A simple value valid for a JSON schema, for answers that must follow the schema a request names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_DEPTH = 4  # past this, optional parts are left out so recursive schemas end
_STRING_FORMATS = {
    "date-time": "2024-01-02T03:04:05Z",
    "date": "2024-01-02",
    "time": "03:04:05",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "email": "fake@example.com",
    "uri": "https://example.com/fake",
}


def _example(schema: Any, root: Mapping[str, Any], depth: int = 0) -> Any:
    """A simple value valid for a JSON schema (or Gemini's OpenAPI-style schema)."""
    if not isinstance(schema, Mapping):
        return "fake"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _example(_resolve(ref, root), root, depth)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):  # allOf: pydantic only wraps a lone $ref in one
        options = schema.get(key)
        if isinstance(options, list) and options:
            concrete = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            if not concrete or (depth >= _DEPTH and len(concrete) < len(options)):
                return None
            return _example(concrete[0], root, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        concrete_kinds = [k for k in kind if k != "null"]
        if not concrete_kinds or (depth >= _DEPTH and "null" in kind):
            return None
        kind = concrete_kinds[0]
    if schema.get("nullable") is True and depth >= _DEPTH:
        return None
    if not isinstance(kind, str):
        kind = "object" if "properties" in schema else "array" if "items" in schema else ""
    kind = kind.lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        everything = "required" not in schema and depth < _DEPTH
        return {
            name: _example(sub, root, depth + 1)
            for name, sub in properties.items()
            if name in required or everything
        }
    if kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [_example(sub, root, depth + 1) for sub in prefix]
        count = max(int(schema.get("minItems", 0)), 1 if depth < _DEPTH else 0)
        return [_example(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "string":
        text = _STRING_FORMATS.get(str(schema.get("format")), "fake")
        text = text.ljust(int(schema.get("minLength", 0)), "x")
        return text[: int(schema["maxLength"])] if "maxLength" in schema else text
    if kind in ("integer", "number"):
        value: float = 7 if kind == "integer" else 7.5
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if isinstance(low, (int, float)) and value <= low:
            value = low + (1 if "exclusiveMinimum" in schema else 0)
        if isinstance(high, (int, float)) and value >= high:
            value = high - (1 if "exclusiveMaximum" in schema else 0)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "fake"


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    node: Any = root
    for part in ref.lstrip("#").split("/"):
        if part:
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, Mapping) else {}
    return node


def _schema_text(schema: Any) -> str:
    return json.dumps(_example(schema, schema if isinstance(schema, Mapping) else {}))

