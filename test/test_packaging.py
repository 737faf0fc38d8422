"""What a user installs: the sdist and the wheel built from it, as a package index would serve them.

Both are built offline with setuptools' own backend (what `pip wheel --no-build-isolation` runs), in a copy of
the tree so the checkout gets no build/ or egg-info. About a second each.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

import openmonetize

_IGNORED = shutil.ignore_patterns(".git", ".tools", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                  ".hypothesis", ".venv", "*.db", "*.db-*")
_RELATIVE_LINK = re.compile(r"!?\[[^\]]*\]\((?![a-zA-Z][a-zA-Z0-9+.-]*:)([^)\s]*)\)")


def _backend(tree: Path, hook: str, out: Path) -> Path:
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


def _copy_of_the_tree(tmp: Path) -> Path:
    tree = tmp / "tree"
    shutil.copytree(ROOT, tree, symlinks=True, ignore=_IGNORED)
    return tree


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel built from the unpacked sdist): the path pip takes from an sdist."""
    tmp = tmp_path_factory.mktemp("packaging")
    sdist = _backend(_copy_of_the_tree(tmp), "build_sdist", tmp / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "unpacked", filter="tar")
    [unpacked] = (tmp / "unpacked").iterdir()
    return sdist, _backend(unpacked, "build_wheel", tmp / "dist")


def _sdist_names(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as archive:
        return [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]


def _metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]], str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(meta).decode("utf-8"))
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key, []).append(value)
    return names, fields, str(message.get_payload())


def test_one_version_from_the_generator_config_to_metadata_and_user_agent(built):
    _, wheel = built
    _, fields, _ = _metadata(wheel)
    config = yaml.safe_load((ROOT / "openapi-generator.yaml").read_text(encoding="utf-8"))
    version = config["additionalProperties"]["packageVersion"]
    assert fields["Version"] == [version] == [openmonetize.__version__]
    assert wheel.name.startswith(f"openmonetize-{version}-")
    from openmonetize import ApiClient
    assert ApiClient().user_agent.startswith(f"openmonetize-python/{version} python/")


def test_the_license_ships_in_both_and_matches_the_metadata(built):
    sdist, wheel = built
    assert "LICENSE" in _sdist_names(sdist)
    names, fields, _ = _metadata(wheel)
    assert any(n.endswith(".dist-info/LICENSE") for n in names)
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "OpenMonetize contributors" in text
    assert fields["License"] == ["MIT"]
    assert "License :: OSI Approved :: MIT License" in fields["Classifier"]


def test_classifiers_say_versions_typed_and_status(built):
    _, fields, _ = _metadata(built[1])
    classifiers = set(fields["Classifier"])
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert {"Typing :: Typed", "Operating System :: OS Independent", "Development Status :: 4 - Beta"} <= classifiers
    assert [v.replace(" ", "") for v in fields["Requires-Python"]] == [">=3.10"]


def test_the_description_on_the_index_has_no_relative_link(built):
    _, fields, description = _metadata(built[1])
    assert fields["Description-Content-Type"] == ["text/markdown"]
    assert description.startswith("# openmonetize")
    assert _RELATIVE_LINK.findall(description) == []
    assert "`openmonetize docs errors`" in description and "`openmonetize docs benchmarks`" in description
    # the README in the tree keeps its links (they work there)
    assert _RELATIVE_LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_wheel_ships_py_typed_the_spec_and_every_guide_and_reference_page(built):
    names = set(_metadata(built[1])[0])
    assert {"openmonetize/py.typed", "openmonetize/openapi.yaml"} <= names
    guides = {f"openmonetize/guides/{p.name}" for p in (ROOT / "docs" / "guides").glob("*.md")}
    reference = {f"openmonetize/guides/reference/{p.name}" for p in (ROOT / "docs").glob("*.md")
                 if p.name != "README.md"}
    assert len(guides) >= 7 and len(reference) >= 10
    assert guides | reference | {"openmonetize/guides/benchmarks.md"} <= names
    with zipfile.ZipFile(built[1]) as archive:  # the spec as a file, not a symlink that points outside
        assert archive.read("openmonetize/openapi.yaml") == (ROOT / "openapi.yaml").read_bytes()
    assert not any(n.startswith(("test/", "bench/", "templates/")) for n in names)


def test_the_sdist_builds_the_wheel_and_holds_no_tests(built):
    names = _sdist_names(built[0])
    assert {"setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "BENCHMARKS.md", "openapi.yaml",
            "docs/guides/errors.md", "openmonetize/py.typed"} <= set(names)
    # no tests: they need the repository (its conftest, bench/, the generator), so none is shipped half-way
    assert not [n for n in names if n.startswith("test") or "conftest" in n or n.startswith("bench/")]


def test_the_cli_reads_the_pages_the_wheel_ships(built, tmp_path):
    with zipfile.ZipFile(built[1]) as archive:
        archive.extractall(tmp_path)
    code = ("from openmonetize.cli.docs import shipped_pages; pages = shipped_pages();"
            "print(sorted(pages)); print(pages['errors'])")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert "benchmarks" in out[0] and "TokenUsageEvent" in out[0] and "quickstart" in out[0]
    assert out[1] == str(tmp_path / "openmonetize" / "guides" / "errors.md")


def test_a_readme_link_to_a_file_the_package_does_not_ship_fails_the_build(tmp_path):
    tree = _copy_of_the_tree(tmp_path)
    with (tree / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("\nSee [the notes](NOTES.md).\n")
    code = "from setuptools import build_meta; build_meta.build_sdist('out')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    assert result.returncode != 0
    assert "README.md links to 'NOTES.md', which the package index cannot show" in result.stderr
