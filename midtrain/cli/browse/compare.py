"""`midtrain compare`: recipes side by side (rows computed by midtrain.summary)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import complete_recipe, echo_json, resolve_recipe
from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    from rich.table import Table

    from midtrain.schema.recipe import Recipe


@guarded
def compare(
    ids: list[str] = typer.Argument(..., help="Two or more recipe ids or files.", autocompletion=complete_recipe),
    fields: str | None = typer.Option(
        None,
        "--fields",
        help="Comma-separated rows to show: names from the default set or dotted paths (e.g. base.peak_lr).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recipes side by side. Token totals count the main line; side branches have their own row, and
    `unknowns` and `errata` count the values the sources do not give and those corrected upstream.

    [bold]Examples[/bold]

      midtrain compare olmo-2-1124-7b llama-3.1-405b deepseek-v3
      midtrain compare olmo-2-1124-7b qwen3-8b --fields mid_training_tokens,total_tokens,base.rope_theta
    """
    from midtrain.summary import COMPARE_FIELDS, compare_rows

    if len(ids) < 2:
        raise MidtrainError.single(
            "compare needs at least two recipes", expected="two or more ids", found=str(len(ids))
        )
    pairs = [resolve_recipe(i) for i in ids]
    recipes = [p[0] for p in pairs]
    wanted = [f.strip() for f in fields.split(",")] if fields else list(COMPARE_FIELDS)
    table = compare_rows(recipes, wanted, pairs[0][1].registry)
    if as_json:
        echo_json({"recipes": [r.id for r in recipes], "rows": table})
        return
    from midtrain.cli.render import console

    console().print(_view(recipes, table))


def _view(recipes: list[Recipe], table: dict[str, list[Any]]) -> Table:
    from rich import box
    from rich.table import Table

    view = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    view.add_column("field", style="dim")
    for recipe in recipes:
        view.add_column(recipe.id)
    for name, values in table.items():
        view.add_row(name, *[str(v) for v in values])
    return view


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
