"""`midtrain schema`: export the JSON Schema of recipe and registry files (built by midtrain.schema.export)."""

from __future__ import annotations

from pathlib import Path

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import echo_json

# Spelled out rather than imported: midtrain.schema.export imports the schema (pydantic models),
# which `midtrain --help` must not pay for. tests/cli/test_browse.py checks it against SCHEMA_KINDS.
KIND_HELP = "Which schema: recipe, sources, models, scales."


@guarded
def schema(
    kind: str = typer.Argument("recipe", help=KIND_HELP),
    out: Path | None = typer.Option(None, "--out", help="Write every schema as JSON files into this directory."),
) -> None:
    """Export the JSON Schema (draft 2020-12) of recipe and registry files, for YAML editors.

    With the YAML language server (VS Code's YAML extension, Neovim, Helix ...), put this first
    line in a recipe to get completion and checking as you type:

      # yaml-language-server: $schema=../../docs/schema/recipe.schema.json

    [bold]Examples[/bold]

      midtrain schema > recipe.schema.json
      midtrain schema sources
      midtrain schema --out docs/schema
    """
    from midtrain.schema.export import SCHEMA_KINDS, check_kind, json_schema, schema_filename, schema_text

    check_kind(kind)
    if out is not None:
        from midtrain.io import write_text

        for name in SCHEMA_KINDS:
            write_text(out / schema_filename(name), schema_text(name))
            typer.echo(f"wrote {out / schema_filename(name)}")
        return
    echo_json(json_schema(kind))


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
