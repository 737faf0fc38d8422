"""Rules for usage events that openapi.yaml states but a JSON schema cannot express.

The generated event models call `prepare_event` before field validation and `check_event` after it
(the spec's `x-sdk-validators` extension), so these rules hold for every way an event is built:
constructor, `model_validate`, a dict passed to `EventsApi.ingest`, and attribute assignment.
"""

from __future__ import annotations

import json
import math
import sys
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from openmonetize.lib.event_ids import new_event_id, utc_datetime

if TYPE_CHECKING:
    from pydantic import BaseModel

    EventT = TypeVar("EventT", bound=BaseModel)

#: `metadata` bounds, also stated in openapi.yaml (`maxProperties`, `x-max-json-bytes`).
MAX_METADATA_KEYS = 50
MAX_METADATA_JSON_BYTES = 4096

#: the largest int a JSON number read as a double can hold without becoming infinity
_MAX_FINITE_QUANTITY = int(sys.float_info.max)



def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder itself, made once: `json.JSONEncoder.encode` makes a new one on every call, which was most of
# the cost of checking a small metadata dict. Without the circular-reference markers (they would have to be
# fresh per call): a circular structure ends in RecursionError instead, refused as not plain JSON.
_iterencode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _no_default, json.encoder.encode_basestring, None, ":", ",", False, False, False)


def prepare_event(cls: type[BaseModel], data: Any) -> Any:
    """Fill in what a caller may omit: `event_id` (a new UUIDv7) and `timestamp` (now).

    The values are written into the dict itself: a dict sent twice is then the same event, with the
    same id, and the service's deduplication makes the resend harmless. `None` counts as omitted.
    """
    if type(data) is dict:
        quantity = data.get("quantity")
        if quantity is not None:
            _check_quantity_type(quantity)
        no_id, no_time = data.get("event_id") is None, data.get("timestamp") is None
        if no_id or no_time:
            now = time.time_ns()  # one reading: an event made without both has the same instant in each
            if no_id:
                data["event_id"] = new_event_id(now)
            if no_time:
                data["timestamp"] = utc_datetime(now)
    return data


def _check_quantity_type(quantity: Any) -> None:
    """Refuse what pydantic would turn into a different float or crash on with a raw OverflowError."""
    if isinstance(quantity, Decimal):
        raise ValueError(
            f"quantity={quantity!r} is not allowed: pass an int or a float (a Decimal would be sent as a float that"
            " may differ from it; convert it yourself if that is what you mean)"
        )
    if type(quantity) is int and quantity > _MAX_FINITE_QUANTITY:
        raise ValueError(
            f"quantity={_short_int(quantity)} is not allowed: quantity must be a finite number greater than 0,"
            f" at most {sys.float_info.max!r}"
        )


def _short_int(value: int) -> str:
    """A huge int's repr is thousands of digits (and past 4300 digits str() raises): show its size instead."""
    digits = math.floor(value.bit_length() * math.log10(2)) + 1
    return repr(value) if digits <= 30 else f"<int of about {digits} digits>"


def check_event(event: EventT) -> EventT:
    """Cross-field and size rules; each error names the field, its value and the rule."""
    # Fields are read from __dict__: getattr() of a field another event type lacks goes through
    # pydantic's __getattr__ and costs microseconds, and this runs for every event built.
    check_fields(**event.__dict__)
    return event


def check_fields(input_tokens: int | None = None, output_tokens: int | None = None,
                 cached_input_tokens: int | None = None, reasoning_tokens: int | None = None,
                 quantity: float | None = None, metadata: dict[str, Any] | None = None, **_other: Any) -> None:
    """`check_event`'s rules on an event's field values. The parameters are the fields the rules read (any
    other field is ignored): `event_json` passes exactly these, read from this signature, by position (its
    compiled code: no dict of every field, no keyword matching)."""
    if reasoning_tokens is not None and output_tokens is not None and reasoning_tokens > output_tokens:
        raise _exceeds("reasoning_tokens", reasoning_tokens, "output_tokens", output_tokens,
                       "reasoning is counted inside output_tokens")
    if cached_input_tokens is not None and input_tokens is not None and cached_input_tokens > input_tokens:
        raise _exceeds("cached_input_tokens", cached_input_tokens, "input_tokens", input_tokens,
                       "cached tokens are counted inside input_tokens")
    if quantity is not None and not math.isfinite(quantity):
        raise ValueError(f"quantity={quantity!r} is not allowed: quantity must be a finite number greater than 0")
    if metadata is not None:
        check_metadata(metadata)


def _exceeds(part: str, value: int, whole: str, limit: int, why: str) -> ValueError:
    return ValueError(f"{part}={value} exceeds {whole}={limit}: {part} may not exceed {whole} ({why})")


def check_metadata(metadata: dict[str, Any]) -> str:
    """The metadata rules (at most 50 keys, plain JSON, at most 4096 bytes as JSON); returns the JSON text they
    measured (the `json` encoder's, compact, not ASCII-escaped: for keys of exact `str` and values of exact
    `str`, `int`, `bool` or None, the models' serializer writes the same text, which `event_json` then reuses)."""
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"metadata has {len(metadata)} keys: at most {MAX_METADATA_KEYS} are allowed")
    try:
        encoded = "".join(_iterencode(metadata, 0))
    except RecursionError:
        raise ValueError("metadata must be plain JSON (str, int, float, bool, None, list, dict): it contains itself,"
                         " or nests too deep") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be plain JSON (str, int, float, bool, None, list, dict): {exc}") from None
    size = len(encoded) if encoded.isascii() else len(encoded.encode())  # (UTF-8 bytes: one a character if ASCII)
    if size > MAX_METADATA_JSON_BYTES:
        raise ValueError(
            f"metadata is {size} bytes as JSON: at most {MAX_METADATA_JSON_BYTES} bytes are allowed"
        )
    return encoded
