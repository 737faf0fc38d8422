"""Multipart uploads (OpenAI images and audio) as a dict, so they are recorded and answered like JSON.

Multipart requests are recorded as their form: text fields as strings, files as
``{"filename", "size"}``, a repeated field (``image[]``) as a list under its name without ``[]``.
"""

from __future__ import annotations

import email.policy
from email.parser import BytesParser
from typing import Any

from .replies import Json


def _form(raw: bytes, content_type: str) -> Json | None:
    """A multipart/form-data body as a dict: text fields as strings, files as ``{"filename", "size"}``;
    a repeated field (``image[]``) becomes a list, under its name without ``[]``. None if malformed."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        return None
    form: Json = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        name = name.removesuffix("[]")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        value: Any = {"filename": filename, "size": len(data)} if filename is not None else \
            data.decode("utf-8", "replace")
        if name in form:
            previous = form[name]
            form[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            form[name] = value
    return form

