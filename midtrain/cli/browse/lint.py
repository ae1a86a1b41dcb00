"""`midtrain lint`: provenance coverage of the catalogue."""

from __future__ import annotations

from typing import Any

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import echo_json, load_catalog


@guarded
def lint(
    min_tagged: float = typer.Option(
        0.95, help="Fail when the overall share of numbers with provenance is below this."
    ),
    min_stated: float = typer.Option(0.80, help="Fail when the overall share of `stated` numbers is below this."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {tagged, stated, recipes: {id: {...}}}."),
) -> None:
    """Provenance coverage of the catalogue.

    Per recipe and overall: the share of numbers that say where they come from, and the share stated
    by the source.

    [bold]Examples[/bold]

      midtrain lint
      midtrain lint --json | jq .tagged
    """
    from midtrain.summary import coverage

    per = {r.id: coverage(r) for r in load_catalog().all()}
    numbers = sum(c["numbers"] for c in per.values())
    tagged = sum(c["tagged"] * c["numbers"] for c in per.values()) / numbers if numbers else 1.0
    stated = sum(c["stated"] * c["numbers"] for c in per.values()) / numbers if numbers else 1.0
    ok = tagged >= min_tagged and stated >= min_stated
    if as_json:
        echo_json(
            {"tagged": round(tagged, 4), "stated": round(stated, 4), "numbers": numbers, "ok": ok, "recipes": per}
        )
        raise typer.Exit(0 if ok else 1)
    from midtrain.cli.render import console

    out = console()
    out.print(_table(per))
    verdict = "[green]✓[/green]" if ok else "[red]✗[/red]"
    out.print(
        f"{verdict} overall: {tagged:.1%} of {numbers} numbers tagged (goal ≥ {min_tagged:.0%}), {stated:.1%} stated (goal ≥ {min_stated:.0%})"
    )
    if not ok:
        raise typer.Exit(1)


def _table(per: dict[str, dict[str, Any]]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in ("recipe", "numbers", "tagged", "stated", "derived", "assumed", "untagged"):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    for recipe_id, c in per.items():
        table.add_row(
            recipe_id,
            str(c["numbers"]),
            f"{c['tagged']:.0%}",
            f"{c['stated']:.0%}",
            str(c["by_status"]["derived"]),
            str(c["by_status"]["assumed"]),
            str(len(c["untagged"])),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("lint")(lint)
