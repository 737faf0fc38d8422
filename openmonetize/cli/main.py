"""The `openmonetize` command group; each command lives in a module of its own."""

from __future__ import annotations

import click

from openmonetize.cli.docs import docs
from openmonetize.cli.send import send
from openmonetize.cli.serve import serve
from openmonetize.cli.spool import spool
from openmonetize.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="openmonetize", prog_name="openmonetize")
def cli() -> None:
    """Meter AI usage from the shell: try the SDK, backfill usage from logs, inspect a spool.

    The API key is read from OPENMONETIZE_API_KEY (or --api-key) and never printed (serve prints the dev
    key it generated or was given on its command line). Exit status: 0 ok, 1 partial failure (some events
    invalid, refused or not delivered), 2 usage error. The guides ship with the package: `openmonetize docs`
    lists them, `openmonetize docs cli` has this command's details.
    """


@cli.command()
def demo() -> None:
    """A tour with no account and no network: a local server, events sent, retried, deduplicated, summed."""
    try:
        import openmonetize.testing.server  # noqa: F401  (the demo's server: its dependencies come with the extra)
        from openmonetize.cli.demo import main
    except ImportError as exc:
        raise click.ClickException(
            f"demo needs the local server's dependencies ({exc.name} is missing): pip install 'openmonetize[cli]'"
        ) from None
    main()


cli.add_command(serve)
cli.add_command(send)
cli.add_command(usage)
cli.add_command(spool)
cli.add_command(docs)
