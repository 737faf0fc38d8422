"""The Python usage of the user's SDK guide, and every Python block of README.md, runs verbatim against
LocalIngestServer.

The guide's blocks run in sequence (its later blocks use the first one's `events_api`); only `config.host` is
pointed at the local server, after the guide's own initialization block ran. Each README block runs on its own,
in a fresh namespace: a block that needs a name from another one fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from openmonetize import OpenMonetize
from openmonetize.lib.llm import LLMTracker
from openmonetize.testing import FakeLLMServer, LocalIngestServer

SEED_GUIDES = sorted((ROOT.parent / "shared" / "seeds").glob("000_*.txt"))
GUIDE_KEY = "your-api-key"
PRODUCTION_URL = "https://api.openmonetize.io"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


README_BLOCKS = python_blocks(ROOT / "README.md")


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


def assert_guide_events(stored: dict[str, dict[str, Any]]) -> None:
    assert {"evt_123", "evt_img_123", "evt_custom_123"} <= set(stored)
    assert stored["evt_123"]["input_tokens"] == 1000 and stored["evt_123"]["output_tokens"] == 500
    assert stored["evt_img_123"]["image_size"] == "1024x1024" and stored["evt_img_123"]["quality"] == "hd"
    assert stored["evt_custom_123"]["unit_type"] == "pages" and stored["evt_custom_123"]["quantity"] == 10
    # the guide's timestamps are naive local times: they are sent with an explicit offset
    assert all(re.search(r"([+-]\d\d:\d\d|Z)$", e["timestamp"]) for e in stored.values())


@pytest.mark.parametrize("guide", SEED_GUIDES, ids=lambda p: p.name)
def test_guide_usage_runs_verbatim(guide: Path):
    blocks = python_blocks(guide)
    assert blocks, f"no Python usage found in {guide}"
    with LocalIngestServer(api_key=GUIDE_KEY) as server:
        namespace = run_guide(blocks, server)
        stored = {e["event_id"]: e for e in server.events}
    assert set(stored) == {"evt_123", "evt_img_123", "evt_custom_123"}
    assert_guide_events(stored)
    assert "events_api" in namespace


def run_readme_block(block: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """Runs one README block alone, its production URL and every key pointed at local servers; returns the
    events it delivered."""
    monkeypatch.chdir(tmp_path)  # a spool directory in an example is relative
    with LocalIngestServer(api_key=GUIDE_KEY) as server, FakeLLMServer() as fake:
        monkeypatch.setenv("OPENMONETIZE_API_KEY", GUIDE_KEY)
        monkeypatch.setenv("OPENMONETIZE_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url("openai"))
        namespace: dict[str, object] = {}
        try:
            exec(compile(block.replace(PRODUCTION_URL, server.url), "README.md", "exec"), namespace)
        finally:
            for value in namespace.values():  # background senders deliver what they hold, then stop
                if isinstance(value, (OpenMonetize, LLMTracker)):
                    value.shutdown(5)
        return server.events


@pytest.mark.parametrize("index", range(len(README_BLOCKS)), ids=lambda i: f"block{i}")
def test_each_readme_block_runs_on_its_own(index: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    block = README_BLOCKS[index]
    assert "import " in block, "a README block without its imports cannot run on its own"
    run_readme_block(block, monkeypatch, tmp_path)


def test_readme_blocks_send_the_guide_events(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    sent_by_block = [run_readme_block(b, monkeypatch, tmp_path) for b in README_BLOCKS if "events_api.ingest(" in b]
    assert_guide_events({e["event_id"]: e for events in sent_by_block for e in events})
    [batch] = [events for events in sent_by_block if len(events) == 3]
    assert {e["event_type"] for e in batch} == {"TOKEN_USAGE", "CUSTOM"}


def test_readme_block_that_needs_another_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with pytest.raises(NameError, match="events_api"):
        run_readme_block("from openmonetize import CustomEvent\nevents_api.ingest(events=[])\n", monkeypatch, tmp_path)


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
