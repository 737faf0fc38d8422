"""JSON as the ingest contract reads it: `NaN`, `Infinity` and numbers that overflow a float are refused
(Python's `json` accepts all three, and none of them is JSON a service could store)."""

from __future__ import annotations

import json
import math
from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:50]} is out of range")
    return value


#: `json.loads` for untrusted input; built once (json.loads with options builds a decoder per call).
loads = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float).decode
