"""Reading usage events from JSON lines: one line in, one validated event (or one reason) out.

Kept apart from the `send` command so the format and, above all, the event id rule can be tested on
their own: the id a line gets is a compatibility promise. Re-running a file must give every line the id
it got the first time, or the service could not tell a resend from new usage and would bill it twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from time import time_ns
from typing import IO, Any

from pydantic import ValidationError

from openmonetize.lib import event_json, strict_json
from openmonetize.lib.event_types import MODELS_BY_TYPE
from openmonetize.models.event import Event

try:  # the `orjson` extra (the `cli` extra includes it): a line's canonical JSON in C (`_canonical_bytes`)
    import orjson as _orjson_module

    _orjson: Any = _orjson_module
    _SORT_KEYS = _orjson.OPT_SORT_KEYS
except ImportError:
    _orjson = None

EventModel = Event  # any member of the generated union: a type added to openapi.yaml is accepted as is

#: Namespace of the ids `send` derives. Never change it, nor the rule in `derive_event_id`: ids of lines
#: sent by earlier versions would change, and re-sending their files would bill them again.
SEND_ID_NAMESPACE = uuid.UUID("5b0a33f4-3c1e-5d7a-9a43-8f2c1d6e0b71")

#: Longer lines are refused without being held in memory: an event is at most a few KB (metadata is
#: limited to 4096 bytes), so a longer line is not an event.
MAX_LINE_BYTES = 1024 * 1024

_MODELS = MODELS_BY_TYPE
#: each type's direct writer (`event_json`'s plan of its model; a model without a plan always decides)
_PLANS: dict[str, Callable[[dict[str, Any], int], tuple[str, bytes] | None]] = {
    name: (plan.write if (plan := event_json.PLANS[model]) is not None else lambda data, now_ns: None)
    for name, model in _MODELS.items()}
_FIELDS = {name: frozenset(model.model_fields) for name, model in _MODELS.items()}
_TAGS = ", ".join(_MODELS)


@dataclass(frozen=True)
class Invalid:
    """A line that is not a valid event: never sent, reported with its number and why."""

    line: int | None  # None only for an event the service refused that can no longer be traced to its line
    reason: str
    original: bytes

    def to_json(self) -> str:
        """The rejects file's record: the line as it was (text), its number and the reason."""
        text = self.original.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
        return json.dumps({"line": self.line, "reason": self.reason, "original": text}, ensure_ascii=False)


def id_namespace(name: str = "") -> uuid.UUID:
    """The namespace of one id scope; "" (the default) is the scope every plain `send` uses."""
    return SEND_ID_NAMESPACE if not name else uuid.uuid5(SEND_ID_NAMESPACE, name)


def derive_event_id(namespace: uuid.UUID, line: int, event: dict[str, Any]) -> str:
    """The id of a line that carries none: the line's timestamp, then a hash of its number and content.

    A UUIDv8 (RFC 9562, custom layout) laid out like the SDK's UUIDv7s: 48 bits of the event's
    `timestamp` in Unix milliseconds (`event_time_ms`), version 8, then 74 bits of
    SHA-1(namespace bytes + "<line number>:<canonical JSON>"). The hash makes it unique and
    deterministic; the time part keeps ids in event-time order, as the SDK's own ids are, which keeps
    the service's inserts in index order (bench/send.py measures what random ids cost the local server).

    Canonical JSON is the line's object with keys sorted, no spaces, non-ASCII kept as is, so
    reformatting a file (reordering keys, pretty spacing) keeps its ids. The line number keeps identical
    lines distinct: two identical usage records are two charges. Neither the file's name nor the machine
    (time zone, Python version) plays a part, so `send FILE` and `send - < FILE` give the same ids.
    """
    prefix = _namespace_bytes.get(namespace)
    if prefix is None:
        prefix = _namespace_bytes[namespace] = namespace.bytes
    # The hash's first 80 bits, as 20 hex digits: 12 bits (3 digits) for rand_a, then the low 62 of the
    # remaining 68 for rand_b, under the variant bits 0b10 (digit 4 keeps its low two bits, digit 3 is dropped).
    # The same text as formatting the 128-bit value (the rule above) would give, without building the int.
    h = hashlib.sha1(prefix + f"{line}:".encode() + _canonical_bytes(event)).hexdigest()
    t = event_time_ms(event.get("timestamp"))  # < 2**48: the first 8 hex digits, then the last 4
    return f"{t >> 16:08x}-{t & 0xFFFF:04x}-8{h[:3]}-{_VARIANT[h[4]]}{h[5:8]}-{h[8:20]}"


_MAX_48 = (1 << 48) - 1
#: a hex digit with its top two bits replaced by the RFC 9562 variant, 0b10
_VARIANT = {f"{n:x}": f"{0b1000 | n & 0b11:x}" for n in range(16)}
_namespace_bytes: dict[uuid.UUID, bytes] = {}  # uuid.UUID.bytes builds them anew on every read
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))?")
_days_of: dict[str, int] = {}  # "YYYY-MM-DD" -> days since 1970-01-01; a log repeats its dates
_PLAIN_UTC = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z")
_minute_ms: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" (ASCII digits) -> its Unix milliseconds, unclamped
# A plain UTC timestamp is its first 19 characters ("YYYY-MM-DDTHH:MM:SS", ASCII digits) and the rest ("Z" or
# ".<1 to 9 digits>Z"): `_PLAIN_UTC` is those two fixed parts one after the other, so a string whose head and
# tail were both seen in timestamps it matched matches it too, and its milliseconds are the sum of theirs.
_second_ms: dict[str, int] = {}  # head -> its Unix milliseconds, unclamped (a log repeats its seconds)
_fraction_ms: dict[str, int] = {}  # tail -> its milliseconds (a log repeats its fractions)


def event_time_ms(timestamp: Any) -> int:
    """The time part of a derived id: an RFC 3339 timestamp as Unix milliseconds, computed from the text
    alone (no offset counts as UTC here, whatever the machine's zone), clamped to 48 bits; 0 for anything
    else. It orders ids; the event's own timestamp is validated and sent as usual."""
    if type(timestamp) is not str:
        return 0
    second = _second_ms.get(timestamp[:19])
    if second is not None:  # the usual case: a plain UTC timestamp whose head and tail are known (above)
        fraction = _fraction_ms.get(timestamp[19:])
        if fraction is not None:
            return min(max(second + fraction, 0), _MAX_48)
    plain = _PLAIN_UTC.fullmatch(timestamp)
    if plain is not None:  # "YYYY-MM-DDTHH:MM:SS[.f]Z": what the general rule below gives it, with its minute's
        minute, second_text, digits = plain.groups()  # milliseconds looked up (a log repeats them)
        millis = _minute_ms.get(minute)
        if millis is None:
            if len(_minute_ms) > 10_000:
                _minute_ms.clear()
            millis = _minute_ms[minute] = _unclamped_ms(timestamp[:16] + ":00Z")
        millis += int(second_text) * 1000
        fraction = int((digits + "00")[:3]) if digits else 0
        if len(_second_ms) > 10_000:
            _second_ms.clear()
        if len(_fraction_ms) > 10_000:
            _fraction_ms.clear()
        _second_ms[timestamp[:19]] = millis
        _fraction_ms[timestamp[19:]] = fraction
        return min(max(millis + fraction, 0), _MAX_48)
    return min(max(_unclamped_ms(timestamp), 0), _MAX_48)


def _unclamped_ms(timestamp: str) -> int:
    """`event_time_ms`'s general rule, before the clamp (0 for text it does not read)."""
    match = _RFC3339.fullmatch(timestamp)
    if match is None:
        return 0
    date, hour, minute, second, fraction, sign, offset_hours, offset_minutes = match.groups()
    days = _days_of.get(date)
    if days is None:
        if len(_days_of) > 10_000:
            _days_of.clear()
        days = _days_of[date] = _days_from_civil(int(date[:4]), int(date[5:7]), int(date[8:]))
    minutes = days * 1440 + int(hour) * 60 + int(minute)
    if sign:
        minutes += (int(offset_hours) * 60 + int(offset_minutes)) * (-1 if sign == "+" else 1)
    return (minutes * 60 + int(second)) * 1000 + (int((fraction + "00")[:3]) if fraction else 0)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm): no datetime, no zone."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


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
    data = _prepared(raw, line, namespace)
    return data if isinstance(data, Invalid) else _validated(data, raw, line)


def parse_line_json(raw: bytes, line: int, namespace: uuid.UUID) -> tuple[str, bytes] | Invalid:
    """`parse_line`, ending in (event id, the event's JSON as the model serializes it): what `send` queues.

    A plain line (every field as the model takes it as is, the timestamp a plain UTC string) is written
    straight from its decoded dict by `event_json`'s rules, read from the same models, with no model
    built; anything else goes through `parse_line`'s model, which accepts or refuses it as always.
    test_send_json's property test pins that both ways give the same bytes and id, or the same refusal.
    """
    data = _prepared(raw, line, namespace)
    if isinstance(data, Invalid):
        return data
    written = _PLANS[data["event_type"]](data, time_ns())
    if written is not None:
        return written
    event = _validated(data, raw, line)
    if isinstance(event, Invalid):
        return event
    return event.event_id, event.__pydantic_serializer__.to_json(event, exclude_none=True)


def _prepared(raw: bytes, line: int, namespace: uuid.UUID) -> dict[str, Any] | Invalid:
    """The line's object, its shape checked and its id derived if it has none; or why it is not an event."""
    if len(raw) > MAX_LINE_BYTES:
        return Invalid(line, f"the line is longer than {MAX_LINE_BYTES} bytes: not a usage event", raw[:200])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid(line, f"the line is not UTF-8 text (byte {exc.start + 1})", raw)
    try:
        data = _decode(text)
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
    return data


def _validated(data: dict[str, Any], raw: bytes, line: int) -> EventModel | Invalid:
    try:
        return _MODELS[data["event_type"]].__pydantic_validator__.validate_python(data)  # type: ignore[no-any-return]
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
    fields = _FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        return f"event_type={_show(kind)}: it must be one of {_TAGS}"
    if not fields.issuperset(data):
        unknown = sorted(set(data) - fields)
        return (f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: not part of {kind} events "
                f"(fields: {', '.join(sorted(fields))})")
    if data.get("timestamp") is None:
        return ("timestamp is missing: a sent line must say when the usage happened "
                "(RFC 3339, e.g. 2026-11-22T17:00:00Z)")
    return None


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


# Built once: json.dumps/json.loads with options build a new encoder/decoder per call (~2 us per line).
_scan = strict_json.loads.__self__.scan_once  # type: ignore[attr-defined]  # the decoder's own C scanner


def _decode(text: str) -> Any:
    """`strict_json.loads(text)`: the same value, or the same error. A line that is one JSON value and its
    line end is scanned directly (`decode` matches a whitespace regex on both sides of every value)."""
    try:
        value, end = _scan(text, 0)
    except (ValueError, StopIteration):  # bad JSON, NaN, leading whitespace...: the decoder decides, and says why
        return strict_json.loads(text)
    if end != len(text) and text[end:].strip(" \t\n\r"):  # (JSON's whitespace) followed by more: the decoder
        return strict_json.loads(text)
    return value
_canonical: Callable[[Any], str] = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
if c_make_encoder is not None:  # the C encoder json.dumps itself runs, kept instead of rebuilt per call
    _c_canonical = c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", True, False, True)

    def _canonical_c(value: Any) -> str:
        return "".join(_c_canonical(value, 0))

    _canonical = _canonical_c


def _canonical_bytes(event: dict[str, Any]) -> bytes:
    """`_canonical(event).encode()`, by orjson when it writes the same text: sorted keys at every level, no
    spaces, the same escapes (only `"`, `\\` and control characters; non-ASCII kept), so every value but a
    float, which json writes as its repr and orjson not always so (`1e-07` against `1e-7`). A line with a
    float anywhere, or one orjson refuses (an int beyond 64 bits, a lone surrogate), goes to json, which
    decides as before. test_send_ids pins the bytes against json's for every line. (bench/send.py: the
    derived id 4.0-4.1 µs a line, against 5.0-5.1 with json's encoder.)"""
    if _orjson is not None and _without_floats(event.values()):
        try:
            return _orjson.dumps(event, option=_SORT_KEYS)  # type: ignore[no-any-return]
        except TypeError:  # orjson.JSONEncodeError
            pass
    return _canonical(event).encode()


def _without_floats(values: Iterable[Any]) -> bool:
    """Whether decoded JSON values (an object's or an array's) hold nothing but str, int, bool, None, and
    objects and arrays of them, at any depth."""
    if _only_scalars(map(type, values)):
        return True
    for item in values:
        kind = type(item)
        if kind is dict:
            if not _without_floats(item.values()):
                return False
        elif kind is list:
            if not _without_floats(item):
                return False
        elif kind not in _SCALARS:
            return False
    return True


_SCALARS = frozenset({str, int, bool, type(None)})
_only_scalars = _SCALARS.issuperset


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")

