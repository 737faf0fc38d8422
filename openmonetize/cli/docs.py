"""`openmonetize docs [TOPIC]`: the guides and reference pages, from the installed package (no network).

The wheel ships them under `openmonetize/guides/` (setup.py copies docs/guides/*.md, BENCHMARKS.md as
benchmarks.md and the generated docs/*.md pages into it); in a source checkout they are read from docs/.
"""

from __future__ import annotations

from pathlib import Path

import click

from openmonetize.cli.common import stdout_console

_PACKAGE = Path(__file__).resolve().parent.parent


def shipped_pages() -> dict[str, Path]:
    """Topic -> page: the guides first (by name), then the reference pages; empty if none can be found."""
    shipped = _PACKAGE / "guides"
    if shipped.is_dir():
        guides = sorted(shipped.glob("*.md"))
        reference = sorted((shipped / "reference").glob("*.md"))
    else:  # a source checkout (or an editable install of one)
        tree = _PACKAGE.parent
        guides = sorted((tree / "docs" / "guides").glob("*.md")) + [p for p in [tree / "BENCHMARKS.md"] if p.is_file()]
        reference = sorted(p for p in (tree / "docs").glob("*.md") if p.name != "README.md")
    pages = {("benchmarks" if p.name == "BENCHMARKS.md" else p.stem): p for p in guides}
    pages.update({p.stem: p for p in reference})
    return pages


def _title(page: Path) -> str:
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip().replace("`", "")
    return ""


@click.command()
@click.argument("topic", required=False)
@click.option("--raw", is_flag=True, help="Print the page's Markdown source instead of rendering it.")
def docs(topic: str | None, raw: bool) -> None:
    """Read the documentation shipped with the package: without TOPIC, list the pages.

    Topics are the guides (quickstart, events, errors, delivery, llm, cli, benchmarks, ...) and the reference
    page of each model and of EventsApi (e.g. `openmonetize docs TokenUsageEvent`); names are case-insensitive.
    """
    pages = shipped_pages()
    if not pages:
        raise click.ClickException("no documentation found in this installation of openmonetize")
    console = stdout_console()
    if topic is None:
        from rich.table import Table  # here, not at import: every command imports this module

        table = Table("topic", "page", box=None, header_style="bold")
        for name, page in pages.items():
            reference = page.parent.name in ("reference", "docs")  # the wheel's folder, or the checkout's
            table.add_row(name, _title(page) + (" (reference)" if reference else ""))
        console.print(table)
        console.print("\nRead one with: openmonetize docs TOPIC (--raw for the Markdown source)")
        return
    by_lower = {name.lower(): page for name, page in pages.items()}
    chosen = by_lower.get(topic.lower().removesuffix(".md"))
    if chosen is None:
        raise click.UsageError(f"no page {topic!r}; the topics are: {', '.join(pages)}")
    text = chosen.read_text(encoding="utf-8")
    if raw:
        click.echo(text, nl=False)
    else:
        from rich.markdown import Markdown  # markdown-it and rich's renderer: ~65 ms no other command needs

        console.print(Markdown(text))
