"""Helpers the command modules share: recipe completion and lookup, JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    from midtrain.catalog import Catalog
    from midtrain.schema.recipe import Recipe


def complete_recipe(incomplete: str) -> list[str]:
    """Shell completion of recipe ids: file names only, so it stays instant."""
    from midtrain.catalog import find_root, recipe_files

    return [p.stem for p in recipe_files(find_root()) if p.stem.startswith(incomplete)]


def load_catalog() -> Catalog:
    from midtrain.catalog import load_catalog as load

    return load()


def resolve_recipe(ref: str) -> tuple[Recipe, Catalog]:
    """A recipe id from the catalogue, or a path to a recipe file (e.g. a customised copy): (recipe, catalog)."""
    catalog = load_catalog()
    path = Path(ref)
    if ref.endswith((".yaml", ".yml")) and path.exists():
        from midtrain.catalog import validate_paths

        recipes, problems = validate_paths([path], catalog.root)
        if problems:
            raise MidtrainError(problems)
        return recipes[0], catalog
    return catalog.get(ref), catalog


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
