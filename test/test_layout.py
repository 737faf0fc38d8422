"""The boundary between generated and hand-written code is one list: .openapi-generator-ignore.

Its `openmonetize/<package>/**` lines are the hand-written packages, and they are the list that matters: the
generator reads it and leaves those paths alone. What the generator does write it lists itself in
.openapi-generator/FILES (the drift check keeps that honest). Everything else that names the boundary is a
view of these two and is checked here: ruff's and mypy's lists in pyproject.toml, and lib/__init__.py's
docstring. A new generated module, or a new hand-written package, fails here until each view agrees.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import openmonetize.lib

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "openmonetize"


def handwritten_packages() -> set[str]:
    """The hand-written packages, e.g. {"openmonetize/lib", ...}: the ignore file's `openmonetize/X/**` lines."""
    lines = (ROOT / ".openapi-generator-ignore").read_text(encoding="utf-8").splitlines()
    return {m.group(1) for line in lines if (m := re.fullmatch(r"(openmonetize/\w+)/\*\*", line.strip()))}


def generated_python() -> set[str]:
    """Every Python module the generator writes, as the generator lists it."""
    lines = (ROOT / ".openapi-generator" / "FILES").read_text(encoding="utf-8").splitlines()
    return {line for line in lines if line.endswith(".py")}


def package_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def generated_views() -> set[str]:
    """The generated modules as a tool's path list names them: a directory when the generator wrote all of it."""
    generated, modules = generated_python(), package_modules()
    views = set()
    for path in generated:
        folder = path.rsplit("/", 1)[0]
        whole = folder != "openmonetize" and all(m in generated for m in modules if m.startswith(folder + "/"))
        views.add(folder if whole else path)
    return views


def module_name(view: str) -> str:
    """"openmonetize/api" -> "openmonetize.api.*", "openmonetize/__init__.py" -> "openmonetize"."""
    if not view.endswith(".py"):
        return view.replace("/", ".") + ".*"
    return view.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def mypy_override(key: str) -> set[str]:
    (override,) = [o for o in pyproject()["tool"]["mypy"]["overrides"] if o.get(key)]
    return set(override["module"])


def test_every_module_is_generated_or_in_a_handwritten_package_and_never_both():
    packages = handwritten_packages()
    assert packages, "no openmonetize/<package>/** line in .openapi-generator-ignore"
    generated = generated_python()

    def owner(path: str) -> set[str]:
        return {p for p in packages if path.startswith(p + "/")}

    assert all(not owner(path) for path in generated), "the generator lists a file in a hand-written package"
    orphans = sorted(m for m in package_modules() if m not in generated and not owner(m))
    assert orphans == [], f"neither generated nor in a hand-written package of .openapi-generator-ignore: {orphans}"
    missing = sorted(path for path in generated if not (ROOT / path).is_file())
    assert missing == [], f".openapi-generator/FILES lists files that are not there: {missing}"


def test_ruff_excludes_exactly_the_generated_modules():
    assert set(pyproject()["tool"]["ruff"]["extend-exclude"]) == generated_views()


def test_mypy_skips_errors_in_exactly_the_generated_modules_and_checks_every_handwritten_package():
    assert mypy_override("ignore_errors") == {module_name(view) for view in generated_views()}
    strict = mypy_override("disallow_untyped_defs")
    checked = set(pyproject()["tool"]["mypy"]["files"])
    for package in handwritten_packages():
        assert package in checked
        assert module_name(package) in strict


def test_the_lib_docstring_names_the_handwritten_packages_of_the_ignore_file():
    doc = openmonetize.lib.__doc__ or ""
    named = set(re.findall(r"`(openmonetize/\w+)/`", doc.split("\n\n")[1]))
    assert named == handwritten_packages()
