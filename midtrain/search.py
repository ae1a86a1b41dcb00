"""Full-text search over recipes and their data sources: what `midtrain search` looks in, and the hits.

Torch-free and cheap: each recipe becomes a small haystack of named text fields (id, title, paper,
techniques, stage descriptions, notes, data sources); a recipe matches when every word occurs in
it, and is scored by how often the words occur.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midtrain.schema.recipe import Recipe
    from midtrain.schema.registry import Registry


def haystack(recipe: Recipe, registry: Registry) -> dict[str, str]:
    """The searchable text of one recipe, by field name (`stage NAME` and `source NAME` per stage and source)."""
    fields = {
        "id": recipe.id,
        "title": recipe.title,
        "organization": recipe.organization,
        "family": recipe.family.value,
        "architecture": recipe.architecture,
        "paper": f"{recipe.source.title} {recipe.source.arxiv or ''}",
        "objectives": " ".join(o.value for o in recipe.objectives),
        "techniques": " ".join(t.value for t in recipe.techniques),
        "notes": recipe.notes or "",
    }
    for stage in recipe.stages:
        fields[f"stage {stage.name}"] = " ".join(
            filter(
                None,
                [
                    stage.name,
                    stage.kind.value,
                    stage.description or "",
                    stage.mixture.note or "",
                    stage.schedule.describe(),
                ],
            )
        )
        for component in stage.mixture.components:
            source = registry.sources.get(component.source)
            fields[f"source {component.source}"] = (
                f"{component.source} {source.description if source else ''} {source.hub_id or '' if source else ''}"
            )
    return fields


def query_words(text: list[str]) -> list[str]:
    """The lower-cased words of a query given as one or more arguments (`"linear decay"` is two words)."""
    return [w.lower() for w in " ".join(text).split()]


def snippet(text: str, words: list[str], width: int = 90) -> str:
    """About `width` characters of `text` around the first word found, with … where it was cut."""
    lower = text.lower()
    at = min((lower.find(w) for w in words if w in lower), default=0)
    start = max(0, at - width // 3)
    piece = text[start : start + width].replace("\n", " ")
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


def search(recipes: list[Any], registry: Any, words: list[str]) -> list[dict[str, Any]]:
    """Recipes containing every word: {id, title, score, fields (matched), snippet}, best first, then by id."""
    hits = []
    for recipe in recipes:
        fields = haystack(recipe, registry)
        blob = " ".join(fields.values()).lower()
        if not all(w in blob for w in words):
            continue
        matched = [name for name, value in fields.items() if any(w in value.lower() for w in words)]
        score = sum(blob.count(w) for w in words)
        text = snippet(" ".join(fields[m] for m in matched), words)
        hits.append({"id": recipe.id, "title": recipe.title, "score": score, "fields": matched, "snippet": text})
    hits.sort(key=lambda h: (-h["score"], h["id"]))
    return hits
