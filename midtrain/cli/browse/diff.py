"""`midtrain diff`: the semantic difference of two recipes (computed by midtrain.recipe_diff)."""

from __future__ import annotations

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import complete_recipe, echo_json, resolve_recipe


@guarded
def diff(
    a: str = typer.Argument(..., help="Recipe id or file.", autocompletion=complete_recipe),
    b: str = typer.Argument(..., help="Recipe id or file.", autocompletion=complete_recipe),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Semantic difference of two recipes, stage by stage.

    Stages are paired by name first, then by kind in order (a side branch only with a side branch);
    a stage without a partner is shown as removed (only in the first recipe) or added (only in the
    second). For each pair: budgets and unknown values, stage boundaries, batch and its ramp, LR at
    stage start, context and RoPE, FIM, up-scaling, optimizer and its state, and mixture deltas (by
    source, and by category when the sources differ) and ramps.

    [bold]Examples[/bold]

      midtrain diff olmo-2-1124-7b llama-3.1-405b
      midtrain diff olmo-2-1124-7b my-recipes/olmo-2-1124-7b-more-math.yaml
    """
    from midtrain.recipe_diff import diff_recipes

    recipe_a, catalog = resolve_recipe(a)
    recipe_b, _ = resolve_recipe(b)
    result = diff_recipes(recipe_a, recipe_b, catalog.registry)
    if as_json:
        echo_json(result)
        return
    from midtrain.cli.render import console, diff_view

    console().print(diff_view(result))


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)
