"""Error answers in each provider's own shape (so each SDK raises its own exception type), and the header
each provider names its request id in."""

from __future__ import annotations

from .replies import Json, _Reply

_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                       429: "rate_limit_exceeded"}
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                          529: "overloaded_error"}
_GOOGLE_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
                    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _request_id_header(provider: str, seq: int) -> dict[str, str]:
    """The header each provider names its request id in (the SDKs expose it as ``_request_id``)."""
    if provider == "anthropic":
        return {"request-id": f"req_01fake{seq:016d}"}
    if provider in ("openai", "groq"):
        return {"x-request-id": f"req_fake{seq:024d}"}
    return {}


def _error(provider: str, status: int, message: str, seq: int = 0) -> _Reply:
    if provider == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        request_id = _request_id_header(provider, seq)["request-id"]
        body: Json = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
        return _Reply(status, body)
    if provider in ("gemini", "vertex"):
        status_name = _GOOGLE_STATUSES.get(status, "UNKNOWN")
        return _Reply(status, {"error": {"code": status, "message": message, "status": status_name}})
    if provider == "openrouter":
        return _Reply(status, {"error": {"code": status, "message": message, "metadata": {}}})
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

