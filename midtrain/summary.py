"""Plain-data views of recipes shared by `list`, `diff`, `compare`, `lint` and the HTML catalogue.

No Rich, no torch: every function here returns dicts and lists that print as JSON.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from midtrain.schema.provenance import covering_entry, numeric_items
from midtrain.schema.recipe import UNCOUNTED_PREFIXES, Recipe
from midtrain.schema.schedule import lr_after_warmup
from midtrain.units import fmt_tokens, human_count

if TYPE_CHECKING:
    from midtrain.schema.registry import Registry


def list_row(recipe: Recipe) -> dict[str, Any]:
    return {
        "id": recipe.id,
        "title": recipe.title,
        "model": recipe.architecture_class().removesuffix("ForCausalLM"),
        "family": recipe.family.value,
        "organization": recipe.organization,
        "year": recipe.source.year,
        "parameters": recipe.parameters,
        "stages": len(recipe.stages),
        "mid_training_tokens": recipe.mid_training_tokens(),
        "total_tokens": recipe.total_tokens(),
        "final_context": recipe.final_context(),
        "objectives": [o.value for o in recipe.objectives],
        "techniques": [t.value for t in recipe.techniques],
    }


def stage_facts(recipe: Recipe, registry: Registry | None = None) -> list[dict[str, Any]]:
    """Per stage: budget, boundaries as a share of all the stages' tokens, LRs, context, RoPE, mixture."""
    total = recipe.total_tokens()
    facts = []
    position = 0.0
    theta = recipe.base.rope_theta
    for stage in recipe.stages:
        tokens = stage.total_tokens()
        steps = stage.total_steps()
        run_tokens = (tokens or 0) * stage.runs.count
        start_share = position / total if total else None
        position += run_tokens
        end_share = position / total if total else None
        lr_start = lr_end = None
        if steps:
            try:
                lr_start = lr_after_warmup(stage.schedule, steps, recipe.base.lr_at_end)
                lr_end = stage.schedule.lr_at(steps - 1, steps, recipe.base.lr_at_end)
            except ValueError:
                pass
        rope_text = stage.rope.describe(theta) if stage.rope else "unchanged"
        if stage.rope and stage.rope.theta:
            theta = stage.rope.theta
        shares = stage.mixture.shares()
        categories: dict[str, float] = {}
        if registry is not None:
            for name, share in shares.items():
                source = registry.sources.get(name)
                key = source.category.value if source else "?"
                categories[key] = categories.get(key, 0.0) + share
        facts.append(
            {
                "name": stage.name,
                "kind": stage.kind.value,
                "mid_training": stage.kind.is_mid_training,
                "tokens": tokens,
                "runs": stage.runs.count,
                "steps": steps,
                "share_start": start_share,
                "share_end": end_share,
                "sequence_length": stage.sequence_length,
                "tokens_per_step": stage.tokens_per_step(),
                "schedule": stage.schedule.type,
                "schedule_text": stage.schedule.describe(),
                "lr_start": lr_start,
                "lr_end": lr_end,
                "rope": rope_text,
                "rope_theta": theta,
                "mixture": shares,
                "categories": categories,
            }
        )
    return facts


def written_numbers(recipe: Recipe) -> dict[str, float]:
    """Numbers the recipe file writes (schema defaults are not claims), by path."""
    data = recipe.model_dump(mode="json", exclude_unset=True, exclude={"provenance", "contradictions"})
    return {p: v for p, v in numeric_items(data) if not p.startswith(UNCOUNTED_PREFIXES)}


def coverage(recipe: Recipe) -> dict[str, Any]:
    """Share of the numbers written in the file that carry provenance, and the share `stated`."""
    entries = recipe.canonical_provenance()
    counted = list(written_numbers(recipe))
    statuses: dict[str, int] = {"stated": 0, "derived": 0, "assumed": 0}
    untagged = []
    for path in counted:
        hit = covering_entry(path, entries)
        if hit is None:
            untagged.append(path)
        else:
            statuses[hit[1].status] += 1
    n = len(counted)
    tagged = n - len(untagged)
    return {
        "numbers": n,
        "tagged": tagged / n if n else 1.0,
        "stated": statuses["stated"] / n if n else 1.0,
        "by_status": statuses,
        "untagged": untagged,
    }


# ---------------------------------------------------------------- diff


def _overview(recipe: Recipe) -> dict[str, Any]:
    return {
        "family": recipe.family.value,
        "parameters": recipe.parameters,
        "base model": recipe.base.model,
        "base tokens seen": recipe.base.tokens_seen,
        "base context": recipe.base.context_length,
        "base LR at end": recipe.base.lr_at_end,
        "stages": len(recipe.stages),
        "mid-training tokens": recipe.mid_training_tokens(),
        "total tokens (all stages)": recipe.total_tokens(),
        "final context": recipe.final_context(),
        "merges": ", ".join(f"{m.name} ({m.method})" for m in recipe.merges) or None,
        "objectives": ", ".join(o.value for o in recipe.objectives),
        "techniques": ", ".join(t.value for t in recipe.techniques),
    }


STAGE_DIFF_FIELDS = (
    "kind",
    "tokens",
    "runs",
    "steps",
    "share_start",
    "share_end",
    "sequence_length",
    "tokens_per_step",
    "schedule_text",
    "lr_start",
    "lr_end",
    "rope",
)


def _same(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1e-30)
    return x == y


# ---------------------------------------------------------------- compare

COMPARE_FIELDS = {
    "organization": lambda r, reg: r.organization.split(" (")[0],
    "year": lambda r, reg: r.source.year,
    "model": lambda r, reg: f"{r.architecture_class().removesuffix('ForCausalLM')} {human_count(r.parameters)}",
    "base_tokens": lambda r, reg: fmt_tokens(r.base.tokens_seen),
    "mid_training_tokens": lambda r, reg: fmt_tokens(r.mid_training_tokens()),
    "total_tokens": lambda r, reg: fmt_tokens(r.total_tokens()),
    "mid_share": lambda r, reg: _mid_share(r),
    "stages": lambda r, reg: " → ".join(
        f"{s.name} ({fmt_tokens(s.total_tokens())}{'' if s.kind.is_mid_training else ', pre-training'})"
        for s in r.stages
    ),
    "base_context": lambda r, reg: f"{r.base.context_length:,}",
    "final_context": lambda r, reg: f"{r.final_context():,}",
    "schedules": lambda r, reg: " | ".join(s.schedule.type for s in r.stages),
    "lr_start": lambda r, reg: ", ".join(
        f"{f['lr_start']:.3g}" if f["lr_start"] is not None else "?" for f in stage_facts(r)
    ),
    "rope": lambda r, reg: " | ".join(f["rope"] for f in stage_facts(r)),
    "merges": lambda r, reg: ", ".join(f"{m.method}" for m in r.merges) or "-",
    "objectives": lambda r, reg: ", ".join(o.value for o in r.objectives),
    "target_share": lambda r, reg: _target_share(r, reg),
}


def _mid_share(recipe: Recipe) -> str:
    """Mid-training tokens as a share of everything trained: the base's tokens plus every stage's."""
    mid, total, base = recipe.mid_training_tokens(), recipe.total_tokens(), recipe.base.tokens_seen
    return f"{mid / (base + total):.1%}" if mid and total and base else "?"


def _target_share(recipe: Recipe, registry: Registry | None) -> str:
    """Share of non-general data in the last stage."""
    if registry is None:
        return "?"
    shares = stage_facts(recipe, registry)[-1]["categories"]
    general = sum(v for k, v in shares.items() if k in ("general", "web"))
    return f"{1 - general:.0%}"


def lookup(data: Any, dotted: str) -> Any:
    """Follow a dotted path (list items by index or name) through plain data."""
    node = data
    for part in re.split(r"\.|\[|\]", dotted):
        if part == "":
            continue
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = next((x for x in node if isinstance(x, dict) and part in (x.get("name"), x.get("source"))), None)
        else:
            return None
    return node


# Older names still accepted by --fields.
COMPARE_ALIASES = {"mid_tokens": "mid_training_tokens"}


def compare_rows(recipes: list[Recipe], fields: list[str], registry: Registry | None) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {}
    dumps = [r.model_dump(mode="json", exclude_none=True) for r in recipes]
    for field in fields:
        known = COMPARE_ALIASES.get(field, field)
        if known in COMPARE_FIELDS:
            rows[field] = [COMPARE_FIELDS[known](r, registry) for r in recipes]
        else:
            values = [lookup(d, field) for d in dumps]
            if all(v is None for v in values):
                from midtrain.errors import MidtrainError

                raise MidtrainError.single(
                    f"unknown field {field!r}",
                    expected=f"one of {', '.join(COMPARE_FIELDS)} or a dotted path such as base.peak_lr",
                    found=field,
                )
            rows[field] = ["-" if v is None else v for v in values]
    return rows
