"""Packaging promises: light import, typed package, code quality of the hand-written layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_is_lazy():
    loaded = run_python(
        "import sys, openmonetize; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('openmonetize', 'pydantic', 'urllib3', 'dateutil', 'yaml', 'jsonschema')))"
    )
    assert loaded.strip() == "['openmonetize']"


def test_the_delivery_client_imports_no_asyncio_until_the_program_does():
    # a program that never uses asyncio does not pay for its import; one that does still gets the event-loop
    # rule (never wait for room on a loop's thread: test_delivery's test_track_on_an_event_loop_never_blocks_it)
    loaded = run_python(
        "import sys\n"
        "from openmonetize import OpenMonetize\n"
        "om = OpenMonetize(api_key='k', base_url='http://127.0.0.1:9', shutdown_timeout=0, max_queue_size=1,\n"
        "                  block_timeout=0)\n"
        "for _ in range(3):\n"  # the queue is full from the second event: the back-pressure path runs
        "    om.track_custom_event(customer_id='c', feature_id='f', unit_type='calls', quantity=1)\n"
        "om.shutdown(0)\n"
        "print('asyncio' in sys.modules)\n"
    )
    assert loaded.strip() == "False"


def test_a_client_without_a_spool_never_imports_sqlite_or_the_spool_modules():
    # (issue 14, fourth session) `openmonetize send` and a memory-mode client paid for them at every start
    loaded = run_python(
        "import sys\n"
        "from openmonetize import OpenMonetize\n"
        "import openmonetize.cli.main, openmonetize.cli.backfill\n"  # what `openmonetize send` loads
        "om = OpenMonetize(api_key='k', base_url='http://127.0.0.1:9', shutdown_timeout=0, max_queue_size=1,\n"
        "                  block_timeout=0)\n"
        "for _ in range(3):\n"
        "    om.track_custom_event(customer_id='c', feature_id='f', unit_type='calls', quantity=1)\n"
        "om.shutdown(0)\n"
        "spool = ['sqlite3', 'openmonetize.lib.buffers', 'openmonetize.lib.spool_format',\n"
        "         'openmonetize.lib.spool_queue', 'openmonetize.lib.spool_writer']\n"
        "print([name for name in spool if name in sys.modules])\n"
    )
    assert loaded.strip().splitlines()[-1] == "[]"


def test_lazy_exports_resolve():
    out = run_python(
        "import openmonetize as om; print(om.EventsApi.__module__, om.TokenUsageEvent.__module__, "
        "om.Configuration.__module__, om.ApiException.__module__)"
    )
    assert out.split() == ["openmonetize.api.events_api", "openmonetize.models.token_usage_event",
                           "openmonetize.configuration", "openmonetize.exceptions"]


def test_py_typed_is_shipped():
    assert (ROOT / "openmonetize" / "py.typed").exists()


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_testing_helpers_without_their_extra_say_which_extra_to_install():
    code = ("import sys; sys.modules['yaml'] = None\n"  # as if PyYAML (of the testing extra) were not installed
            "from openmonetize.testing import LocalIngestServer\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "ModuleNotFoundError: openmonetize.testing.LocalIngestServer needs the testing extra" in result.stderr
    assert "pip install 'openmonetize[testing]'" in result.stderr and "'yaml'" in result.stderr


def test_the_guides_usage_passes_mypy_strict_and_mistakes_still_fail_it():
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores", "--no-incremental",
                             str(ROOT / "test" / "typed_usage.py")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_guides_usage_passes_pyright_and_mistakes_still_fail_it():
    pyright = Path(sys.executable).with_name("basedpyright")  # pyright's checker, shipped with its own Node
    result = subprocess.run([str(pyright), "-p", str(ROOT / "test" / "pyrightconfig.typed_usage.json"),
                             "--pythonpath", sys.executable], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout
