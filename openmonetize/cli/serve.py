"""`openmonetize serve`: the local ingest server as a long-running process, storing in SQLite.

A development server: printing the key it generated (or was given with --api-key) is the point, so
clients can be pointed at it. A key taken from OPENMONETIZE_API_KEY is the caller's secret and is only
ever shown masked.
"""

from __future__ import annotations

import errno
import secrets
import shlex
import signal
import threading
import types
from pathlib import Path

import click

from openmonetize.cli.common import mask


@click.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default="usage.db",
              show_default=True, help="SQLite database the events are stored in (created if missing); reopening"
                                      " it keeps its events and their deduplication.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--api-key", envvar="OPENMONETIZE_API_KEY", show_envvar=True, metavar="KEY",
              help="The key clients must send. Default: a new random key, printed. Taken from the"
                   " environment variable it is printed masked.")
def serve(db_path: Path, port: int, host: str, api_key: str | None) -> None:
    """Run the local ingest server until Ctrl-C or SIGTERM.

    It speaks the ingest API (POST /v1/events/ingest), validates every request against openapi.yaml,
    deduplicates by event_id and stores events in --db; `openmonetize usage --db` reads them back.
    """
    try:
        from openmonetize.testing.server import LocalIngestServer
    except ImportError as exc:
        raise click.ClickException(
            f"serve needs the local server's dependencies ({exc.name} is missing):"
            " pip install 'openmonetize[cli]'") from None

    if api_key:
        # click took it from --api-key or from the environment: only the environment's is secret
        from_env = click.get_current_context().get_parameter_source("api_key") == click.core.ParameterSource.ENVIRONMENT
        shown, origin = (mask(api_key), "from OPENMONETIZE_API_KEY") if from_env else (api_key, "from --api-key")
    else:
        from_env = False
        api_key = "om_dev_" + secrets.token_urlsafe(18)
        shown, origin = api_key, "generated"

    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    server = LocalIngestServer(api_key=api_key, db_path=db_path, host=host, port=port)
    try:
        server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(f"{host}:{port} is already in use: pick another --port (0 for any free one)"
                                       ) from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        click.echo(f"openmonetize local ingest server listening on {server.url}")
        click.echo(f"  API key:  {shown} ({origin})")
        click.echo(f"  database: {db_path.resolve()}")
        click.echo(f"  try:      {try_command(server.url, None if from_env else api_key)}")
        click.echo("Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    click.echo(f"stopped after {server.request_count:,} requests; events are kept in {db_path}")


def try_command(url: str, key: str | None) -> str:
    """A command that works as printed: with this server's key, unless the key is the caller's own secret
    from OPENMONETIZE_API_KEY (then `send` reads it from there, and it is never printed)."""
    key_part = "" if key is None else f"OPENMONETIZE_API_KEY={shlex.quote(key)} "
    return f"{key_part}OPENMONETIZE_BASE_URL={shlex.quote(url)} openmonetize send events.jsonl"
