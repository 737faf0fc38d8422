"""`openmonetize send`: backfill usage from JSON lines through the background delivery client.

Only the command's interface lives here; the engine (`backfill.py`) and the models it validates with
are imported when the command runs, so `openmonetize --help` stays quick.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from openmonetize.cli.common import api_key_option, base_url_option, log_to, require_key, stderr_console


def default_rejects_path(source: str) -> Path:
    """Beside the input: events.jsonl -> events.rejects.jsonl; stdin -> ./stdin.rejects.jsonl."""
    if source == "-":
        return Path("stdin.rejects.jsonl")
    path = Path(source)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{stem}.rejects.jsonl")


@click.command()
@click.argument("source", metavar="FILE.jsonl|-",
                type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=str))
@base_url_option()
@api_key_option("The API key to send with.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Where invalid lines go, each with its line number and reason; written only if there is one."
                   "  [default: beside the input, FILE.rejects.jsonl; ./stdin.rejects.jsonl for -]")
@click.option("--id-namespace", default="", metavar="NAME",
              help="Mixed into the ids derived for lines without event_id. Leave it alone to re-run a file;"
                   " give each source its own if two files may hold identical lines at the same line number.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              metavar="SECONDS",
              help="Give up when the service has confirmed nothing for this long (until then it keeps retrying).")
@click.option("--dry-run", is_flag=True, help="Validate every line and write the rejects file; send nothing.")
def send(source: str, base_url: str, api_key: str | None, rejects_path: Path | None, id_namespace: str,
         timeout: float, dry_run: bool) -> None:
    """Send usage events from a JSON lines file (or - for stdin).

    One event per line, in the ingest API's wire format (see `openmonetize docs cli`); event_id may be
    omitted: a stable one is derived from the line's number and content, so running the same file again
    (after an interruption, say) sends only what did not arrive and never bills a line twice. Invalid
    lines are reported with their number and reason, written to the rejects file, and not sent.

    Exit status: 0 when every valid line was delivered and no line was invalid; 1 when some line was
    invalid, refused or not delivered; 2 for a usage error; 130/143 when interrupted (run it again).
    """
    key = None if dry_run else require_key(api_key)
    rejects_path = rejects_path or default_rejects_path(source)
    if source != "-" and rejects_path.resolve() == Path(source).resolve():
        raise click.BadParameter("the rejects file cannot be the input file", param_hint="--rejects")
    console = stderr_console()
    log_to(console)
    from openmonetize.cli.backfill import run

    code = run(source, base_url, key, rejects_path, id_namespace, timeout, console)
    sys.exit(code)


