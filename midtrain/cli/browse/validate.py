"""`midtrain validate`: recipes (and registry files) against the schema and the registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import echo_json

if TYPE_CHECKING:
    from midtrain.schema.recipe import Recipe


@guarded
def validate(
    paths: list[Path] = typer.Argument(None, help="Recipe files or directories (default: recipes/)."),
    migrate: bool = typer.Option(
        False, "--migrate", help="Rewrite files with an older schema_version in the current format."
    ),
    strict: bool = typer.Option(False, "--strict", help="Also fail when a number has no provenance."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Validate recipes against the schema and the registry.

    Reports every problem at once, each with file, line and field path; exit status 1 when anything
    is wrong.

    [bold]Examples[/bold]

      midtrain validate
      midtrain validate my-recipes/ recipes/olmo-2/olmo-2-1124-7b.yaml
      midtrain validate --strict
    """
    from midtrain.catalog import find_root, validate_paths

    root = find_root()
    targets = list(paths) if paths else [root / "recipes"]
    if migrate:
        from midtrain.upgrade import migrate_files

        for done in migrate_files(targets):
            typer.echo(
                f"migrated {done.path} from schema_version {done.from_version} to {done.to_version} (comments were not kept)"
            )
    recipes, problems = validate_paths(targets, root)
    untagged = _untagged(recipes) if strict else {}
    ok = not problems and not untagged
    if as_json:
        echo_json(
            {
                "ok": ok,
                "valid": [r.id for r in recipes],
                "problems": [_problem_json(p) for p in problems],
                "untagged": untagged,
            }
        )
        raise typer.Exit(0 if ok else 1)
    for problem in problems:
        typer.echo(problem.render(), err=True)
    for recipe_id, missing in untagged.items():
        for path in missing:
            typer.echo(f"{recipe_id}: {path}: number has no provenance entry", err=True)
    if ok:
        from midtrain.catalog import split_registry_files

        registry_files = len(paths) - len(split_registry_files(list(paths), Path.cwd())[0]) if paths else 0
        typer.echo(
            f"✓ {len(recipes)} recipe(s) valid"
            + (f", {registry_files} registry file(s) valid" if registry_files else "")
        )
    else:
        count = len(problems) + sum(len(v) for v in untagged.values())
        typer.echo(f"✗ {count} problem(s); {len(recipes)} recipe(s) valid", err=True)
        raise typer.Exit(1)


def _untagged(recipes: list[Recipe]) -> dict[str, list[str]]:
    """Recipe id -> the paths of its numbers that have no provenance entry (recipes with none left out)."""
    from midtrain.summary import coverage

    untagged: dict[str, list[str]] = {}
    for recipe in recipes:
        missing = coverage(recipe)["untagged"]
        if missing:
            untagged[recipe.id] = missing
    return untagged


def _problem_json(problem: Any) -> dict[str, Any]:
    return {
        "file": str(problem.file) if problem.file else None,
        "line": problem.line,
        "path": problem.path,
        "message": problem.message,
        "expected": problem.expected,
        "found": problem.found,
    }


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
