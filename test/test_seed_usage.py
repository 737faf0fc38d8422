"""The Python usage of the user's SDK guide, and of README.md, runs verbatim against LocalIngestServer.

Only `config.host` is pointed at the local server, after the guide's own initialization block ran.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

from openmonetize.testing import LocalIngestServer

SEED_GUIDES = sorted((ROOT.parent / "shared" / "seeds").glob("000_*.txt"))
GUIDE_KEY = "your-api-key"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def run_guide(blocks: list[str], server: LocalIngestServer) -> dict[str, object]:
    namespace: dict[str, object] = {}
    sent: list[object] = []
    for block in blocks:
        if "event1" in block:  # the guide's batch example reuses the events built by the examples above
            namespace.update(event1=sent[0], event2=sent[1], event3=sent[2])
        exec(compile(block, "guide", "exec"), namespace)
        if "config.host" in block:
            namespace["config"].host = server.url  # type: ignore[attr-defined]
        if "event = " in block:
            sent.append(namespace["event"])
    return namespace


@pytest.mark.parametrize("guide", [*SEED_GUIDES, ROOT / "README.md"], ids=lambda p: p.name)
def test_guide_usage_runs_verbatim(guide: Path):
    # the README's OpenMonetize and LLM tracker blocks run on their own (below, and in test_llm.py)
    blocks = [b for b in python_blocks(guide) if ("events_api" in b or "import" in b) and "OpenMonetize(" not in b
              and "LocalIngestServer" not in b and "create_llm_tracker" not in b]
    assert blocks, f"no Python usage found in {guide}"
    with LocalIngestServer(api_key=GUIDE_KEY) as server:
        namespace = run_guide(blocks, server)
        stored = {e["event_id"]: e for e in server.events}
    assert set(stored) == {"evt_123", "evt_img_123", "evt_custom_123"}
    assert stored["evt_123"]["input_tokens"] == 1000 and stored["evt_123"]["output_tokens"] == 500
    assert stored["evt_img_123"]["image_size"] == "1024x1024" and stored["evt_img_123"]["quality"] == "hd"
    assert stored["evt_custom_123"]["unit_type"] == "pages" and stored["evt_custom_123"]["quantity"] == 10
    # the guide's timestamps are naive local times: they are sent with an explicit offset
    assert all(re.search(r"([+-]\d\d:\d\d|Z)$", e["timestamp"]) for e in stored.values())
    assert "events_api" in namespace


def test_seed_guide_is_present_in_ci():
    if not (ROOT.parent / "shared").exists():
        pytest.skip("the user's seeds are only beside the checkout on the project's machines")
    assert SEED_GUIDES, "expected ../shared/seeds/000_*.txt"


def test_readme_background_delivery_usage_runs_verbatim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    [block] = [b for b in python_blocks(ROOT / "README.md") if "OpenMonetize(" in b]
    monkeypatch.chdir(tmp_path)  # the example's spool directory is relative
    with LocalIngestServer(api_key=GUIDE_KEY) as server:
        monkeypatch.setenv("OPENMONETIZE_API_KEY", GUIDE_KEY)
        monkeypatch.setenv("OPENMONETIZE_BASE_URL", server.url)
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)
        assert namespace["event_id"] in server.event_ids
        assert {e["event_type"] for e in server.events} == {"TOKEN_USAGE", "IMAGE_GENERATION", "CUSTOM"}
