"""Property-based conformance: schemathesis drives the live LocalIngestServer from openapi.yaml.

Every response must use a documented status code, content type, headers and body schema;
schema-valid requests must be accepted and schema-invalid ones refused. Generation is
deterministic (fixed seed, derandomized) so the same cases run every time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from openmonetize.testing import LocalIngestServer
from openmonetize.testing.spec import compact_json, find_spec

API_KEY = "sk_schemathesis_0123456789"
MAX_EXAMPLES = 40
INT64_MAX = 2**63 - 1

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20261122,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
        "headers": {"Authorization": f"Bearer {API_KEY}"},
    }
)
schema = schemathesis.openapi.from_path(find_spec(), config=CONFIG)


def _valid_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT64_MAX


def _follow_prose_rules(event: dict[str, Any]) -> None:
    """Make a schema-valid event also satisfy the rules the spec states only in prose."""
    for part, whole in (("reasoning_tokens", "output_tokens"), ("cached_input_tokens", "input_tokens")):
        if _valid_count(event.get(part)) and _valid_count(event.get(whole)):
            event[part] = min(event[part], event[whole])
    metadata = event.get("metadata")
    if isinstance(metadata, dict) and len(compact_json(metadata).encode("utf-8")) > 4096:
        event["metadata"] = {}


@schema.hook
def map_case(context: Any, case: Any) -> Any:
    # Only positive cases: a negative case must stay invalid, so it is left as generated.
    if case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE:
        events = case.body.get("events") if isinstance(case.body, dict) else None
        for event in events if isinstance(events, list) else []:
            if isinstance(event, dict):
                _follow_prose_rules(event)
    return case


@pytest.fixture(scope="module")
def live_server() -> Iterator[LocalIngestServer]:
    with LocalIngestServer(api_key=API_KEY) as server:
        yield server
        # Guards against a silently empty run (say, the operation was filtered out).
        assert server.request_count > MAX_EXAMPLES
        assert len(server.events) > 0


@schema.parametrize()
def test_server_conforms_to_openapi(case: Any, live_server: LocalIngestServer) -> None:
    case.call_and_validate(base_url=live_server.url)
