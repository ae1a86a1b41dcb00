"""`midtrain show`: one recipe in full, as tables, JSON, the YAML file, or its provenance."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import complete_recipe, echo_json, resolve_recipe

if TYPE_CHECKING:
    from midtrain.schema.recipe import Recipe


@guarded
def show(
    recipe_id: str = typer.Argument(
        ..., help="Recipe id (see `midtrain list`) or path to a recipe file.", autocompletion=complete_recipe
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the validated recipe as JSON."),
    as_yaml: bool = typer.Option(False, "--yaml", help="Print the recipe file as written."),
    provenance: bool = typer.Option(False, "--provenance", "-p", help="List every number with its source."),
) -> None:
    """Show one recipe: source, base, stages, mixtures, schedules, RoPE, merges, results.

    Every number carries a provenance mark: ● stated in the paper, ◐ derived from stated numbers,
    ○ assumed (the paper is silent), · untagged. Values the sources do not give print as "unknown";
    a number the paper prints differently follows the one used, and errata have their own panel.
    Side branches (⑂) follow the main line and are left out of its totals.

    [bold]Examples[/bold]

      midtrain show olmo-2-1124-7b
      midtrain show deepseek-v3 --provenance
      midtrain show qwen3-8b --json | jq '.stages[].rope'
    """
    recipe, catalog = resolve_recipe(recipe_id)
    if as_json:
        echo_json(recipe.model_dump(mode="json", exclude_none=True))
        return
    if as_yaml:
        # a file named on the command line, or the catalogue file of the id (resolve_recipe found it there)
        path = Path(recipe_id) if recipe_id.endswith((".yaml", ".yml")) else catalog.paths[recipe.id]
        typer.echo(path.read_text(encoding="utf-8"), nl=False)
        return
    if provenance:
        _print_provenance(recipe)
        return
    from midtrain.cli.render import console
    from midtrain.cli.render import show as render_show

    out = console()
    out.print(render_show(recipe, catalog.registry, out.width))


def _print_provenance(recipe: Recipe) -> None:
    from midtrain.cli.render import console, legend, provenance_table
    from midtrain.summary import coverage, written_numbers

    out = console()
    out.print(provenance_table(recipe, written_numbers(recipe)))
    cov = coverage(recipe)
    out.print(f"{cov['numbers']} numbers · {cov['tagged']:.0%} with provenance · {cov['stated']:.0%} stated")
    out.print(legend())


def register(app: typer.Typer) -> None:
    app.command("show")(show)
