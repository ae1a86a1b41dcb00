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

    The file name (without .yaml) must be a valid recipe id: lowercase letters, digits, '.', '_' and
    '-', starting with a letter or digit. The copy's `$schema` comment is relative to where it is
    written, so the directory can be moved with the catalogue checkout.

    [bold]Examples[/bold]

      midtrain cp olmo-2-1124-7b my-recipes/
      midtrain cp olmo-2-1124-7b my-recipes/olmo-2-more-math.yaml
      midtrain validate my-recipes/ && midtrain diff olmo-2-1124-7b my-recipes/olmo-2-more-math.yaml
    """
    from midtrain.io import write_text

    catalog = load_catalog()
    recipe = catalog.get(recipe_id)
    source = catalog.paths[recipe.id]
    target = dest / source.name if dest.is_dir() or str(dest).endswith(("/", os.sep)) else dest
    if target.suffix not in (".yaml", ".yml"):
        raise MidtrainError.single("DEST must be a directory or a .yaml file", found=str(dest))
    check_id(target.stem, "DEST", "the file name (the copy's id)")
    if target.exists() and not force:
        raise MidtrainError.single("destination exists; pass --force to overwrite", file=target)
    text = copied_text(
        source.read_text(encoding="utf-8"),
        recipe.id,
        target.stem,
        schema_reference(catalog.root / "docs" / "schema" / "recipe.schema.json", target),
    )
    if text is None:
        raise MidtrainError.single("could not find the id line to rewrite", file=source)
    write_text(target, text)
    typer.echo(f"copied {recipe.id} → {target}")


ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # midtrain.schema.base.Slug, without importing pydantic
ID_MAX_LENGTH = 80
ID_EXPECTED = (
    "a recipe id: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit, at most 80 characters"
)


def check_id(value: str, argument: str, what: str) -> None:
    """Refuse `value` unless it is a valid recipe id, naming the argument it came from."""
    if ID_PATTERN.match(value) and len(value) <= ID_MAX_LENGTH:
        return
    suggestion = re.sub(r"[^a-z0-9._-]+", "-", value.lower()).strip("-._")[:ID_MAX_LENGTH]
    raise MidtrainError.single(
        f"{argument}: {what} is not a valid recipe id" + (f" (try {suggestion!r})" if suggestion else ""),
        expected=ID_EXPECTED,
        found=repr(value),
    )


def schema_reference(schema: Path, target: Path) -> str:
    """The schema file as seen from `target`'s directory (a relative POSIX path), absolute only when
    there is no relative path (another drive on Windows)."""
    try:
        return Path(os.path.relpath(schema.resolve(), target.parent.resolve())).as_posix()
    except ValueError:
        return schema.resolve().as_posix()


def copied_text(text: str, recipe_id: str, new_id: str, schema: str | Path) -> str | None:
    """The recipe file's text with its id set to `new_id` and its schema comment pointing at `schema`;
    None when there is no `id:` line to rewrite."""
    if new_id != recipe_id:
        text, count = re.subn(r"(?m)^id:\s*\S+\s*$", f"id: {new_id}", text, count=1)
        if count != 1:
            return None
    return re.sub(r"(?m)^# yaml-language-server: \$schema=.*$", f"# yaml-language-server: $schema={schema}", text)


def register(app: typer.Typer) -> None:
    app.command("cp")(cp)
