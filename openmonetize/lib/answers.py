"""Which 2xx answers keep the contract. A 2xx that does not is an `InvalidResponseError`, never a success.

A success tells the caller what became of its events; a client that takes a broken one at its word either
resends events the service stored (it never learns they arrived) or counts as delivered events the service
never confirmed. So every 2xx is checked before it is returned:

- its status is one the operation lists (200 and 202 for ingest; a 204 or 201 is not an answer);
- its body parses into the declared model: JSON (UTF-8 unless the answer says otherwise), an object,
  with exact non-negative integer counts (the generated models are strict: ``"5"``, ``5.0`` and ``true``
  are refused, ``null`` too);
- for ingest, when the number of events sent is known, the counts account for every event:
  ``accepted + duplicates + rejected == sent``, ``rejected == len(errors)``, and every ``errors[].index``
  names a different event of the batch (``0 <= index < sent``).

The generated ``ApiClient.response_deserialize`` calls :func:`unreadable` and :func:`check_status` for every
operation; ``EventsApi.ingest``, ``ingest_with_http_info`` and ``ingest_serialized`` call
:func:`check_ingest_response` (the spec's ``x-sdk-check-answer`` extension names it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from openmonetize.exceptions import InvalidResponseError
from openmonetize.models.ingest_response import IngestResponse

__all__ = ["check_ingest_response", "check_status", "unreadable"]


class _Answer(Protocol):
    """The generated `RESTResponse`, read."""

    status: int
    data: bytes | None

    @property
    def headers(self) -> Any: ...


def _invalid(answer: _Answer, reason: str, data: Any = None) -> InvalidResponseError:
    return InvalidResponseError(reason, status=answer.status, headers=answer.headers, body=answer.data or b"",
                                data=data)


def unreadable(answer: _Answer, expected: str | None, exc: BaseException) -> InvalidResponseError:
    """The exception for a 2xx answer whose body could not be turned into ``expected`` (``exc`` says why)."""
    return _invalid(answer, f"the {answer.status} answer is not {_a(expected)}: {_why_not(answer, exc)}")


def check_status(
    answer: _Answer, response_types: Mapping[str, Any] | None, expected: str | None, data: Any
) -> None:
    """Refuse a 2xx the operation does not list, and a listed one with a body type that read as nothing.

    Without ``response_types`` (a caller of ``response_deserialize`` that declares none) nothing is checked.
    """
    if not response_types:
        return
    status = str(answer.status)
    if status not in response_types and f"{status[0]}XX" not in response_types and "default" not in response_types:
        listed = ", ".join(sorted(code for code in response_types if code.startswith("2"))) or "none"
        raise _invalid(answer, f"{status} is not a success status of this operation (listed: {listed})")
    if expected is not None and data is None:
        raise _invalid(answer, f"the {status} answer is not {_a(expected)}: {_shape(answer)}")


def check_ingest_response(
    response: object, sent: int | None, status: int, headers: Any, body: bytes
) -> IngestResponse:
    """``response`` if it accounts for every one of the ``sent`` events, else `InvalidResponseError`.

    With ``sent`` None (the caller did not say how many events its serialized body holds) only the shape is
    checked: an ``IngestResponse``, whose counts are exact non-negative integers.
    """

    def invalid(reason: str) -> InvalidResponseError:
        return InvalidResponseError(reason, status=status, headers=headers, body=body, data=response)

    if not isinstance(response, IngestResponse):
        raise invalid(f"the {status} answer is not an IngestResponse")
    if sent is None:
        return response
    counted = response.accepted + response.duplicates + response.rejected
    if counted != sent:
        raise invalid(f"accepted + duplicates + rejected = {response.accepted} + {response.duplicates} + "
                      f"{response.rejected} = {counted}, but {_events(sent)} sent")
    errors = response.errors or []
    if response.rejected != len(errors):
        raise invalid(f"rejected is {response.rejected} but errors has {len(errors)} entries")
    seen: set[int] = set()
    for error in errors:
        if not 0 <= error.index < sent:
            raise invalid(f"errors[].index {error.index} is out of range: {_events(sent)} sent")
        if error.index in seen:
            raise invalid(f"errors[].index {error.index} appears more than once")
        seen.add(error.index)
    return response


def _events(n: int) -> str:
    return "1 event was" if n == 1 else f"{n} events were"


def _a(expected: str | None) -> str:
    name = expected or "the declared type"
    return f"an {name}" if name[:1] in "AEIOU" else f"a {name}"


def _why_not(answer: _Answer, exc: BaseException) -> str:
    if not answer.data or not answer.data.strip():
        return "the body is empty"
    content_type = str(answer.headers.get("Content-Type") or "") if answer.headers else ""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        return f"the body is {media_type}, not application/json"
    if isinstance(exc, UnicodeError):
        return f"the body is not text in its encoding ({type(exc).__name__})"
    if isinstance(exc, LookupError):
        return f"the body's charset is unknown ({content_type[:100]})"
    if isinstance(exc, json.JSONDecodeError):
        return f"the body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, ValidationError):
        value = _json(answer)
        if not isinstance(value, dict):
            return _shape(answer)
        return _first_problem(exc, value)
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _first_problem(exc: ValidationError, body: dict[str, Any]) -> str:
    """The first field the model refused, said in terms of the JSON received."""
    first = exc.errors()[0]
    loc = first.get("loc", ())
    where = ".".join(str(part) for part in loc) or "the body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if len(loc) == 1 and isinstance(loc[0], str):
        if loc[0] not in body:
            return f"{where} is missing{more}"
        if body[loc[0]] is None:
            return f"{where} is null{more}"
        got = json.dumps(body[loc[0]])
        return f"{where}: {first.get('msg', 'invalid')}, got {got[:60]}{more}"
    return f"{where}: {first.get('msg', 'invalid')}{more}"


_NOT_JSON = object()


def _json(answer: _Answer) -> Any:
    try:
        return json.loads(answer.data or b"")
    except (ValueError, RecursionError):
        return _NOT_JSON


def _shape(answer: _Answer) -> str:
    """What kind of JSON value the body is, in words."""
    value = _json(answer)
    if value is _NOT_JSON:
        return "the body is not JSON"
    kinds = {dict: "a JSON object", list: "a JSON array", str: "a JSON string", bool: "a JSON boolean",
             type(None): "JSON null", int: "a JSON number", float: "a JSON number"}
    return f"the body is {kinds.get(type(value), 'a JSON value')}"
