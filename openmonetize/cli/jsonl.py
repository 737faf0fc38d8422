"""Reading usage events from JSON lines: one line in, one validated event (or one reason) out.

Kept apart from the `send` command so the format and, above all, the event id rule can be tested on
their own: the id a line gets is a compatibility promise. Re-running a file must give every line the id
it got the first time, or the service could not tell a resend from new usage and would bill it twice.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from pydantic import ValidationError

from openmonetize.models.custom_event import CustomEvent
from openmonetize.models.image_generation_event import ImageGenerationEvent
from openmonetize.models.token_usage_event import TokenUsageEvent

EventModel = TokenUsageEvent | ImageGenerationEvent | CustomEvent

#: Namespace of the ids `send` derives (uuid5). Never change it: ids of lines sent by earlier versions
#: would change, and re-sending their files would bill them again.
SEND_ID_NAMESPACE = uuid.UUID("5b0a33f4-3c1e-5d7a-9a43-8f2c1d6e0b71")

#: Longer lines are refused without being held in memory: an event is at most a few KB (metadata is
#: limited to 4096 bytes), so a longer line is not an event.
MAX_LINE_BYTES = 1024 * 1024

_MODELS: dict[str, type[EventModel]] = {
    "TOKEN_USAGE": TokenUsageEvent,
    "IMAGE_GENERATION": ImageGenerationEvent,
    "CUSTOM": CustomEvent,
}
_FIELDS = {name: frozenset(model.model_fields) for name, model in _MODELS.items()}
_TAGS = ", ".join(_MODELS)


@dataclass(frozen=True)
class Invalid:
    """A line that is not a valid event: never sent, reported with its number and why."""

    line: int
    reason: str
    original: bytes

    def to_json(self) -> str:
        """The rejects file's record: the line as it was (text), its number and the reason."""
        text = self.original.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
        return json.dumps({"line": self.line, "reason": self.reason, "original": text}, ensure_ascii=False)


def id_namespace(name: str = "") -> uuid.UUID:
    """The uuid5 namespace of one id scope; "" (the default) is the scope every plain `send` uses."""
    return SEND_ID_NAMESPACE if not name else uuid.uuid5(SEND_ID_NAMESPACE, name)


def derive_event_id(namespace: uuid.UUID, line: int, event: dict[str, Any]) -> str:
    """The id of a line that carries none: uuid5(namespace, "<line number>:<canonical JSON>").

    Canonical JSON is the line's object with keys sorted, no spaces, non-ASCII kept as is, so
    reformatting a file (reordering keys, pretty spacing) keeps its ids. The line number keeps identical
    lines distinct: two identical usage records are two charges. It does not depend on the file's name,
    so `send FILE` and `send - < FILE` give the same ids.
    """
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(uuid.uuid5(namespace, f"{line}:{canonical}"))


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line, bytes read so far) for each non-blank line, in bounded memory.

    Blank lines are skipped but keep their number: line numbers are what an editor shows. A line longer
    than MAX_LINE_BYTES is yielded cut short (its rest is skipped), for `parse_line` to refuse.
    """
    number = position = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        position += len(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:  # skip the rest of an overlong line
                rest = stream.readline(MAX_LINE_BYTES)
                position += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark, as some editors write
        if raw.strip():
            yield number, raw, position


def parse_line(raw: bytes, line: int, namespace: uuid.UUID) -> EventModel | Invalid:
    """Validate one line with the generated models; an event without `event_id` gets a derived one."""
    if len(raw) > MAX_LINE_BYTES:
        return Invalid(line, f"the line is longer than {MAX_LINE_BYTES} bytes: not a usage event", raw[:200])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid(line, f"the line is not UTF-8 text (byte {exc.start + 1})", raw)
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity refused above
        return Invalid(line, f"not valid JSON: {exc}", raw)
    if not isinstance(data, dict):
        return Invalid(line, f"a line must hold one JSON object (an event), not {_json_kind(data)}", raw)
    problem = _check_shape(data)
    if problem is not None:
        return Invalid(line, problem, raw)
    if data.get("event_id") is None:
        data.pop("event_id", None)
        data["event_id"] = derive_event_id(namespace, line, data)
    try:
        return _MODELS[data["event_type"]].model_validate(data)
    except ValidationError as exc:
        return Invalid(line, describe(exc, data["event_type"]), raw)


def describe(error: ValidationError, event_type: str) -> str:
    """One line per problem field: `field=value: rule` (the first problem of each field)."""
    seen: set[str] = set()
    parts: list[str] = []
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else ""
        if field in seen:
            continue  # a union field (quantity) reports once per member type; once is enough
        seen.add(field)
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            parts.append(f"{field} is missing: it is required in {event_type} events")
        elif field:
            parts.append(f"{field}={_show(item['input'])}: {message}")
        else:
            parts.append(message)
    return "; ".join(parts)


def _check_shape(data: dict[str, Any]) -> str | None:
    """What the models do not say themselves: the event type, unknown fields, a missing timestamp."""
    kind = data.get("event_type")
    if kind is None:
        return f"event_type is missing: it must be one of {_TAGS}"
    if kind not in _FIELDS:
        return f"event_type={_show(kind)}: it must be one of {_TAGS}"
    unknown = sorted(set(data) - _FIELDS[kind])
    if unknown:
        listed = ", ".join(unknown)
        return (f"unknown field{'s' if len(unknown) > 1 else ''} {listed}: not part of {kind} events "
                f"(fields: {', '.join(sorted(_FIELDS[kind]))})")
    if data.get("timestamp") is None:
        return ("timestamp is missing: a sent line must say when the usage happened "
                "(RFC 3339, e.g. 2026-11-22T17:00:00Z)")
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:50]} is out of range")
    return value
