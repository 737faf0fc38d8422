"""Shared fixtures: a real LocalIngestServer on loopback and a generated client pointed at it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openmonetize import ApiClient, EventsApi
from openmonetize.configuration import Configuration
from openmonetize.testing import LocalIngestServer

# whichever test imports litellm first (test_llm_litellm.py, the LLM guide's example), it never downloads its
# price list: nothing in the tests may reach the network
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk_test_0123456789abcdef"


@pytest.fixture
def server() -> Iterator[LocalIngestServer]:
    with LocalIngestServer(api_key=API_KEY) as srv:
        yield srv


@pytest.fixture
def events_api(server: LocalIngestServer) -> Iterator[EventsApi]:
    config = Configuration(host=server.url)
    config.api_key["bearerAuth"] = API_KEY
    config.max_retries = 0  # one attempt per call: tests of faults look at a single answer (test_direct_retry.py)
    with ApiClient(config) as client:
        yield EventsApi(client)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll a condition with a generous bound (never a fixed sleep standing in for it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
