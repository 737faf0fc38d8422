"""openapi.yaml is valid, linted, fully documented, and the generated client is exactly what it produces."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from openapi_spec_validator import validate

SPECTRAL_VERSION = "6.16.3"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with open(ROOT / "openapi.yaml") as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


def test_spec_is_valid_openapi_3_0(spec):
    assert spec["openapi"] == "3.0.3"
    validate(spec)


def test_spec_passes_spectral_lint():
    tool_dir = ROOT / ".tools" / f"spectral-{SPECTRAL_VERSION}"
    spectral = tool_dir / "node_modules" / ".bin" / "spectral"
    if not spectral.exists():
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(tool_dir),
                        f"@stoplight/spectral-cli@{SPECTRAL_VERSION}"], check=True, capture_output=True)
    result = subprocess.run([str(spectral), "lint", "--fail-severity=hint", "-r", str(ROOT / ".spectral.yaml"),
                             str(ROOT / "openapi.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def walk_schemas(spec: dict[str, Any]):
    for name, schema in spec["components"]["schemas"].items():
        yield name, schema
        for prop_name, prop in schema.get("properties", {}).items():
            yield f"{name}.{prop_name}", prop


def test_every_schema_and_property_has_a_description_and_an_example(spec):
    for where, schema in walk_schemas(spec):
        assert schema.get("description"), f"{where} has no description"
        if "properties" not in schema and "oneOf" not in schema:
            assert "example" in schema, f"{where} has no example"


def test_ingest_request_example_is_valid_against_the_generated_models(spec):
    from openmonetize import TokenUsageEvent
    from openmonetize.models.ingest_request import IngestRequest

    body = spec["paths"]["/v1/events/ingest"]["post"]["requestBody"]["content"]["application/json"]["example"]
    request = IngestRequest.from_dict(body)
    assert request is not None
    assert request.events[0] == TokenUsageEvent(**body["events"][0])


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def test_regeneration_reproduces_the_generated_tree(tmp_path: Path):
    """The drift check: ./generate.sh on a copy of the checkout changes nothing, adds nothing, removes nothing."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are tracked")
    files = tracked_files()
    copy = tmp_path / "tree"
    for rel in files:
        dest = copy / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest, follow_symlinks=False)
    env = {**os.environ, "OPENMONETIZE_TOOLS_DIR": str(ROOT / ".tools" / "openapi-generator-7.26.0")}
    subprocess.run(["bash", "generate.sh"], cwd=copy, env=env, check=True, capture_output=True)
    after = {str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file() or p.is_symlink()}
    assert sorted(after - set(files)) == [], "generation wrote files that are not committed"
    assert sorted(set(files) - after) == [], "generation removed committed files"
    changed = [rel for rel in files if not (copy / rel).is_symlink()
               and not filecmp.cmp(ROOT / rel, copy / rel, shallow=False)]
    assert changed == [], f"generated files differ from the committed ones: {changed}"
