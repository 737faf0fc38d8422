"""`openmonetize docs`: the documentation the user has, from the command line (source checkout layout here;
test_packaging.py checks the wheel's)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def openmonetize(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openmonetize.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})


def test_the_top_level_help_points_to_the_shipped_docs():
    result = openmonetize("--help")
    assert result.returncode == 0
    assert "openmonetize docs" in result.stdout and "docs/guides" not in result.stdout


def test_docs_lists_every_guide_and_reference_page():
    result = openmonetize("docs")
    assert result.returncode == 0, result.stderr
    for page in [*(ROOT / "docs" / "guides").glob("*.md"), *(ROOT / "docs").glob("[A-Z]*.md")]:
        if page.name != "README.md":
            assert f" {page.stem} " in result.stdout
    assert " benchmarks " in result.stdout and "Read one with: openmonetize docs TOPIC" in result.stdout


def test_docs_topic_renders_the_page_and_raw_prints_its_source():
    rendered = openmonetize("docs", "ERRORS")
    assert rendered.returncode == 0 and "Request ids" in rendered.stdout and "## " not in rendered.stdout
    raw = openmonetize("docs", "errors", "--raw")
    assert raw.stdout == (ROOT / "docs" / "guides" / "errors.md").read_text(encoding="utf-8")
    assert openmonetize("docs", "TokenUsageEvent.md").returncode == 0


def test_an_unknown_topic_is_a_usage_error_that_lists_the_topics():
    result = openmonetize("docs", "nope")
    assert result.returncode == 2
    assert "no page 'nope'; the topics are: " in result.stderr and "quickstart" in result.stderr
