"""Our template changes are a small patch series over the pinned generator's own templates (templates/README.md):
the delta only shrinks, every change is listed with its reason, and a patch that no longer applies stops
./generate.sh naming its template."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT

TEMPLATES = ROOT / "templates"
#: the ceilings of our template delta: lower them when a change shrinks it; a change that must raise one says why
#: in its row of templates/README.md (issue 14: +3 for `body_items`, +6 for the cached content-type test)
MAX_PATCH_LINES = 653  # lines added or removed by templates/patches/*.patch
MAX_WHOLE_LINES = 249  # lines of the templates we write whole (templates/files/)


def patch_lines(patch: Path) -> int:
    return sum(1 for line in patch.read_text().splitlines()
               if line[:1] in "+-" and not line.startswith(("+++ ", "--- ")))


def test_the_template_delta_stays_under_its_ceiling():
    patched = sum(patch_lines(p) for p in TEMPLATES.glob("patches/*.patch"))
    whole = sum(p.read_text().count("\n") for p in TEMPLATES.glob("files/*.mustache"))  # as `wc -l` counts
    print(f"template delta: {patched} lines in patches, {whole} lines in whole templates")
    assert patched <= MAX_PATCH_LINES, f"the patches change {patched} lines: at most {MAX_PATCH_LINES} (shrink them)"
    assert whole <= MAX_WHOLE_LINES, f"whole templates have {whole} lines: at most {MAX_WHOLE_LINES}"


def test_every_patch_and_whole_template_is_listed_with_its_reason_and_nothing_else_is():
    rows = [line for line in (TEMPLATES / "README.md").read_text().splitlines()
            if line.startswith("`") and " | " in line]
    listed = {name for row in rows for name in re.findall(r"`([\w.]+\.mustache)`", row.split(" | ")[0])}
    present = {p.stem + ".mustache" for p in TEMPLATES.glob("patches/*.patch")}
    present |= {p.name for p in TEMPLATES.glob("files/*.mustache")}
    assert present - listed == set(), "templates changed without a row in templates/README.md"
    assert listed - present == set(), "rows in templates/README.md for templates we no longer change"
    assert not list(TEMPLATES.glob("*.mustache")), "templates go in patches/ (changes) or files/ (whole)"


def test_a_patch_that_no_longer_applies_stops_generation_and_names_its_template(tmp_path: Path):
    """What a generator upgrade that moved a line we patch looks like: the run fails, nothing is generated."""
    for name in ("generate.sh", "openapi-generator.yaml", "openapi.yaml", ".openapi-generator-ignore", "templates"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy2(source, tmp_path / name)
    patch = tmp_path / "templates" / "patches" / "rest.patch"
    text = patch.read_text()
    context = next(line for line in text.splitlines() if line.startswith(" ") and line.strip())
    patch.write_text(text.replace(context, context + "  # moved by a newer generator", 1))
    # the checkout's pinned generator (generate.sh installs it there first when it is missing)
    env = {**os.environ, "OPENMONETIZE_TOOLS_DIR": str(ROOT / ".tools" / "openapi-generator-7.26.0")}
    result = subprocess.run(["bash", "generate.sh"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 1
    assert "templates/patches/rest.patch no longer applies to the stock rest.mustache" in result.stderr
    assert not (tmp_path / "openmonetize").exists()  # stopped before the generator ran
