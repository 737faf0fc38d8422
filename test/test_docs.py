"""The Python examples in docs/ run as written (guides against LocalIngestServer, reference pages offline).

Blocks fenced as ```python run; blocks fenced as ```py show code that needs a real account or platform.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

# EventsApi.md's example calls the production host with a real key: it is checked by the signature test below
PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "EventsApi.md")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_python_examples_run(page: Path, capsys: pytest.CaptureFixture[str]):
    for block in python_blocks(page):
        exec(compile(block, str(page), "exec"), {})
    assert capsys.readouterr().out  # every example shows its result


def test_eventsapi_page_documents_the_real_signature():
    page = (ROOT / "docs" / "EventsApi.md").read_text()
    assert "> IngestResponse ingest(events=events)" in page
    assert "api_instance.ingest(events=events)" in page
