"""`openmonetize usage`: totals from the local server's database, as a table (or JSON for scripts)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from openmonetize.cli.common import stdout_console

if TYPE_CHECKING:
    from openmonetize.testing.store import GroupBy, TotalsRow


def _parse_since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 date or date-time; without an offset it is local time, as everywhere in the SDK."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or date-time (e.g. 2026-11-01 or 2026-11-01T09:00:00Z)") from None
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


@click.command()
@click.option("--db", "db_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default="usage.db",
              show_default=True, help="The database of `openmonetize serve`.")
@click.option("--by", type=click.Choice(["customer", "feature", "model"]), default="customer", show_default=True,
              help="One row per customer, feature or model.")
@click.option("--since", metavar="ISO-8601", callback=_parse_since,
              help="Only events whose timestamp is at or after this instant (without an offset: local time).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def usage(db_path: Path, by: GroupBy, since: datetime | None, as_json: bool) -> None:
    """Show usage totals stored by the local ingest server.

    Token and image totals are added up per row; custom quantities are added up per unit (pages with
    pages, never with seconds). Reads the database without locking it: it works while `serve` runs.
    """
    from openmonetize.testing.store import read_totals

    try:
        rows = read_totals(db_path, by, since)
    except Exception as exc:  # sqlite3 errors: not a database, not written by `serve`, ...
        raise click.ClickException(f"cannot read {db_path}: {exc}") from None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    stdout_console().print(_table(rows, by, since))


def _number(value: float) -> str:
    """12,000 or 12,000.25: whole numbers without a fraction, others to the thousandth."""
    return f"{int(value):,}" if value == int(value) else f"{value:,.3f}".rstrip("0")


def _table(rows: list[TotalsRow], by: str, since: datetime | None) -> Table:
    """One line per group: token and image totals, then each unit's quantity."""
    groups: dict[str | None, dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault(row["key"], {"events": 0, "input": 0, "output": 0, "cached": 0, "reasoning": 0,
                                               "images": 0, "units": []})
        group["events"] += row["events"]
        group["input"] += row["input_tokens"]
        group["output"] += row["output_tokens"]
        group["cached"] += row["cached_input_tokens"]
        group["reasoning"] += row["reasoning_tokens"]
        group["images"] += row["image_count"]
        if row["unit_type"] is not None:
            group["units"].append(f"{_number(row['quantity'])} {row['unit_type']}")
    events = sum(group["events"] for group in groups.values())
    title = f"Usage by {by}" + (f" since {since.isoformat()}" if since else "") + f": {events:,} events"
    table = Table(title=title, title_justify="left")
    table.add_column(by)
    for name in ("events", "input tokens", "output tokens", "cached input", "reasoning", "images"):
        table.add_column(name, justify="right")
    table.add_column("units")
    for key, group in groups.items():
        label = key if key is not None else ("(custom units: no model)" if by == "model" else "(none)")
        table.add_row(label, *(f"{group[name]:,}" for name in ("events", "input", "output", "cached", "reasoning",
                                                                "images")), ", ".join(group["units"]))
    if not groups:
        table.caption = "no events" + (" since then" if since else "")
    return table
