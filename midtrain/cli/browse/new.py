"""`midtrain new`: write a recipe skeleton for a paper, to fill in and validate."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from midtrain.cli.app import guarded
from midtrain.errors import MidtrainError


@guarded
def new(
    recipe_id: str = typer.Argument(..., help="The new recipe's id (also its file name)."),
    from_paper: str = typer.Option(None, "--from-paper", help="The paper's arXiv id, e.g. 2501.15383."),
    family: str = typer.Option("llama", "--family", help="The model family (see `midtrain schema`)."),
    organization: str = typer.Option(None, "--org", help="Who trained the model."),
    out: Path = typer.Option(
        None, "--out", help="File or directory to write (default: recipes/<id>/<id>.yaml in the catalogue)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a recipe skeleton with every field of the guide's checklist.

    What the paper has not been read for yet is `unknown` (a stage's budget, batch and schedule) or a
    TODO text; `midtrain validate FILE` then lists everything that remains, all at once. Nothing is
    downloaded: the arXiv id goes into `source`, the rest comes from reading the paper
    (docs/adding-a-recipe.md).

    [bold]Examples[/bold]

      midtrain new qwen2.5-1m --from-paper 2501.15383 --family qwen2 --org "Alibaba Group, Qwen Team"
      midtrain new my-anneal --out my-recipes/
      midtrain validate recipes/qwen2.5-1m/qwen2.5-1m.yaml
    """
    from midtrain.catalog import find_root
    from midtrain.cli.browse.cp import check_id, schema_reference
    from midtrain.io import write_text
    from midtrain.scaffold import Skeleton, skeleton_text
    from midtrain.schema.base import Family

    check_id(recipe_id, "ID", "the recipe id")
    families = [f.value for f in Family]
    if family not in families:
        raise MidtrainError.single("--family: not a known family", expected=", ".join(families), found=repr(family))
    root = find_root()
    if out is None:
        target = root / "recipes" / recipe_id / f"{recipe_id}.yaml"
    elif out.is_dir() or str(out).endswith(("/", os.sep)):
        target = out / f"{recipe_id}.yaml"
    else:
        target = out
    if target.suffix not in (".yaml", ".yml"):
        raise MidtrainError.single("--out must be a directory or a .yaml file", found=str(out))
    if target.stem != recipe_id:
        raise MidtrainError.single(
            "--out: the file name must be the recipe id", expected=f"{recipe_id}.yaml", found=target.name
        )
    if target.exists() and not force:
        raise MidtrainError.single("the file exists; pass --force to overwrite it", file=target)
    schema = schema_reference(root / "docs" / "schema" / "recipe.schema.json", target)
    text = skeleton_text(Skeleton(recipe_id, from_paper, family, organization, schema))
    write_text(target, text)
    typer.echo(f"wrote {target}")
    typer.echo(f"next: fill it in from the paper, then `midtrain validate {target}` lists what remains")


def register(app: typer.Typer) -> None:
    app.command("new")(new)
