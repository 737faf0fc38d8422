"""The `openmonetize` command line: serve, demo, send, usage, spool, docs (hand-written, like lib/).

Its libraries (click, rich) come with the `cli` extra, so `import openmonetize` and a plain
`pip install openmonetize` stay as small as they were. The console script is installed either way:
`main` turns a missing extra into one clear line instead of a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    """The console script's entry point."""
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(f"openmonetize: the command line needs the cli extra ({exc.name} is missing):"
                         " pip install 'openmonetize[cli]'\n")
        raise SystemExit(1) from None
    from openmonetize.cli.main import cli

    cli(prog_name="openmonetize")
