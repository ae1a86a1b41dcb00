"""`midtrain cp`: copy a recipe to customise it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import complete_recipe, load_catalog
from midtrain.errors import MidtrainError


@guarded
def cp(
    recipe_id: str = typer.Argument(..., help="Recipe id to copy.", autocompletion=complete_recipe),
    dest: Path = typer.Argument(..., help="Destination file or directory."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Copy a recipe to customise it. The copy's id follows its file name, so it validates as is.

    [bold]Examples[/bold]

      midtrain cp olmo-2-1124-7b my-recipes/
      midtrain cp olmo-2-1124-7b my-recipes/olmo-2-more-math.yaml
      midtrain validate my-recipes/ && midtrain diff olmo-2-1124-7b my-recipes/olmo-2-more-math.yaml
    """
    from midtrain.io import write_text

    catalog = load_catalog()
    recipe = catalog.get(recipe_id)
    source = catalog.paths[recipe.id]
    target = dest / source.name if dest.is_dir() or str(dest).endswith(os.sep) else dest
    if target.suffix not in (".yaml", ".yml"):
        raise MidtrainError.single("destination must be a directory or a .yaml file", found=str(dest))
    if target.exists() and not force:
        raise MidtrainError.single("destination exists; pass --force to overwrite", file=target)
    text = copied_text(
        source.read_text(encoding="utf-8"),
        recipe.id,
        target.stem,
        catalog.root / "docs" / "schema" / "recipe.schema.json",
    )
    if text is None:
        raise MidtrainError.single("could not find the id line to rewrite", file=source)
    write_text(target, text)
    typer.echo(f"copied {recipe.id} → {target}")


def copied_text(text: str, recipe_id: str, new_id: str, schema: Path) -> str | None:
    """The recipe file's text with its id set to `new_id` and its schema comment pointing at `schema`;
    None when there is no `id:` line to rewrite."""
    if new_id != recipe_id:
        text, count = re.subn(r"(?m)^id:\s*\S+\s*$", f"id: {new_id}", text, count=1)
        if count != 1:
            return None
    return re.sub(r"(?m)^# yaml-language-server: \$schema=.*$", f"# yaml-language-server: $schema={schema}", text)


def register(app: typer.Typer) -> None:
    app.command("cp")(cp)
