"""pytest fixtures for testing against a live local ingest server.

Registered through the ``pytest11`` entry point, so it is loaded by every pytest
session wherever the SDK is installed: keep module-level imports to pytest alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from openmonetize.testing.server import LocalIngestServer


@pytest.fixture
def local_ingest_server() -> Iterator[LocalIngestServer]:
    """A started server on a free loopback port (API key ``test-key``), stopped afterwards."""
    from openmonetize.testing.server import LocalIngestServer

    with LocalIngestServer() as server:
        yield server
