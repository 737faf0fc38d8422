"""Test helpers for the OpenMonetize SDK: a local ingest server that enforces the API contract, and a
fake LLM provider server (``fake_llm``) for testing usage tracking against the real provider SDKs.

``import openmonetize`` never imports this package. Names here are loaded on first
use because the pytest plugin lives in this package: merely having the SDK installed
must not make every pytest session import jsonschema and friends, or fail to start
when the testing dependencies are absent.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openmonetize.testing.fake_llm import FakeLLMServer
    from openmonetize.testing.server import LocalIngestServer
    from openmonetize.testing.store import SummaryRow

__all__ = ["FakeLLMServer", "LocalIngestServer", "SummaryRow"]

_HOMES = {
    "FakeLLMServer": "openmonetize.testing.fake_llm",
    "LocalIngestServer": "openmonetize.testing.server",
    "SummaryRow": "openmonetize.testing.store",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(home)
    except ModuleNotFoundError as exc:  # say which extra brings it, as the command line does
        raise ModuleNotFoundError(
            f"openmonetize.testing.{name} needs the testing extra (missing module {exc.name!r}):"
            " pip install 'openmonetize[testing]'", name=exc.name) from exc
    return getattr(module, name)
