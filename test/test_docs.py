"""The Python examples in docs/ run as written (guides against LocalIngestServer, reference pages offline).

Blocks fenced as ```python run; blocks fenced as ```py show code that needs a real account or platform.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def _page_rows(model: str) -> dict[str, str]:
    """`{field: its table row}` of a generated reference page."""
    rows = {}
    for line in (ROOT / "docs" / f"{model}.md").read_text().splitlines():
        if line.startswith("**") and " | " in line:
            rows[line.split("**")[1]] = line
    return rows


def _constraints(info: Any) -> list[Any]:
    """The annotated-types constraints of a pydantic field, also inside Optional[...] and Union[...]."""
    found = list(getattr(info, "metadata", ()))
    pending = [info.annotation]
    while pending:
        tp = pending.pop()
        for extra in getattr(tp, "__metadata__", ()):
            found.extend(getattr(extra, "metadata", [extra]))
        pending.extend(a for a in getattr(tp, "__args__", ()) if not isinstance(a, str))
    return found


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_reference_pages_show_no_html_entities(page):
    text = page.read_text()
    assert not re.search(r"&(#x?[0-9a-fA-F]+|quot|amp|lt|gt|apos);", text), page.name


@pytest.mark.parametrize("name", ["TokenUsageEvent", "ImageGenerationEvent", "CustomEvent"])
def test_event_pages_state_every_rule_the_model_enforces(name):
    import annotated_types

    import openmonetize

    model = getattr(openmonetize, name)
    rows = _page_rows(name)
    assert set(rows) == set(model.model_fields)
    checked = 0
    for field, info in model.model_fields.items():
        for rule in _constraints(info):
            checked += 1
            if isinstance(rule, annotated_types.Ge):
                assert f"[>= {rule.ge}]" in rows[field], field
            elif isinstance(rule, annotated_types.Gt):
                assert f"[> {rule.gt}]" in rows[field], field
            elif isinstance(rule, annotated_types.Le):
                assert f"[<= {rule.le}]" in rows[field], field
            elif isinstance(rule, annotated_types.MinLen):
                assert f"[length >= {rule.min_length}]" in rows[field], field
            elif isinstance(rule, annotated_types.MaxLen):
                assert f"[length <= {rule.max_length}]" in rows[field], field
    assert checked >= 15
    page = (ROOT / "docs" / f"{name}.md").read_text()
    assert "Unknown fields are refused" in page
    assert "[a `datetime` or an RFC 3339 string" in rows["timestamp"]
    assert "[at most 50 keys] [at most 4096 bytes as compact JSON]" in rows["metadata"]
    if name == "TokenUsageEvent":  # the rules of openmonetize/lib/event_rules.py, from the spec's x-sdk-rules
        assert "[at most `input_tokens`" in rows["cached_input_tokens"]
        assert "[at most `output_tokens`" in rows["reasoning_tokens"]
    if name == "CustomEvent":
        assert "not NaN, not infinity" in rows["quantity"] and "`Decimal`" in rows["quantity"]
