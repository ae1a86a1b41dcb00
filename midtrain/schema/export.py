"""JSON Schema (draft 2020-12) of recipe files and registry files, for YAML editors and other tools.

`midtrain schema` prints one; `midtrain schema --out DIR` writes them all, as `schema_filename(kind)`
with `schema_text(kind)` (docs/schema/ holds the published ones, and a test checks they are current).
Pure: builds the schemas, writes nothing.
"""

from __future__ import annotations

from typing import Any

from midtrain.errors import MidtrainError

SCHEMA_KINDS = ("recipe", "sources", "models", "scales")
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def check_kind(kind: str) -> str:
    if kind not in SCHEMA_KINDS:
        raise MidtrainError.single(f"unknown schema {kind!r}", expected=", ".join(SCHEMA_KINDS), found=kind)
    return kind


def json_schema(kind: str = "recipe") -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a recipe file or a registry file (`sources`, `models`, `scales`)."""
    from midtrain.schema.recipe import Recipe

    check_kind(kind)
    if kind == "recipe":
        schema = Recipe.model_json_schema()
        title = "midtrain recipe"
    else:
        schema = _registry_schema(kind)
        title = f"midtrain registry: {kind}"
    return {"$schema": DRAFT, "title": title, **schema}


def _registry_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one registry file: a mapping of names to entries of that kind."""
    from pydantic import TypeAdapter

    from midtrain.schema.registry import BaseModelEntry, DataSource, ScaleProfile

    if kind == "sources":
        return TypeAdapter(dict[str, DataSource]).json_schema()
    if kind == "models":
        return TypeAdapter(dict[str, BaseModelEntry]).json_schema()
    return TypeAdapter(dict[str, ScaleProfile]).json_schema()


def schema_filename(kind: str) -> str:
    return "recipe.schema.json" if kind == "recipe" else f"registry-{check_kind(kind)}.schema.json"


def schema_text(kind: str) -> str:
    import json

    return json.dumps(json_schema(kind), indent=2, ensure_ascii=False) + "\n"
