"""`midtrain search`: full-text search (the index and scoring live in midtrain.search)."""

from __future__ import annotations

import re
from typing import Any

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import echo_json, load_catalog


@guarded
def search(
    text: list[str] = typer.Argument(..., help="Words to look for (all must match)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Full-text search over recipes and their data sources.

    Looks in ids, titles, papers, techniques, stage descriptions, notes and data sources.

    [bold]Examples[/bold]

      midtrain search yarn
      midtrain search souping math
      midtrain search "linear decay"
    """
    from midtrain.search import query_words
    from midtrain.search import search as find

    catalog = load_catalog()
    words = query_words(text)
    hits = find(catalog.all(), catalog.registry, words)
    if as_json:
        echo_json(hits)
        return
    from rich.markup import escape

    from midtrain.cli.render import console

    out = console()
    if not hits:
        out.print(f"[yellow]nothing matches {escape(repr(' '.join(text)))}[/yellow]")  # the query is text, not markup
        raise typer.Exit(1)
    out.print(_table(hits, words))


def _table(hits: list[dict[str, Any]], words: list[str]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("id", style="bold cyan", no_wrap=True)
    table.add_column("matched in", style="dim")
    table.add_column("context")
    for hit in hits:
        snippet = Text(hit["snippet"])
        for word in words:
            snippet.highlight_regex(re.escape(word), style="bold yellow")
        table.add_row(hit["id"], ", ".join(hit["fields"][:3]), snippet)
    return table


def register(app: typer.Typer) -> None:
    app.command("search")(search)
