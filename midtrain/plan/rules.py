"""Scaling rules: pure functions that map a recipe's numbers onto a target base and budget.

What is kept: token proportions between stages, mixture shares, schedule shapes, every LR relative
to the base's peak LR, the context-extension ratio and RoPE method (θ relative to the base's own
θ), the number of runs and the merges. What changes: absolute sizes. Each rule has a unit test in
tests/plan/test_rules.py.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError
from midtrain.schema.recipe import Recipe

if TYPE_CHECKING:
    from midtrain.schema.schedule import Schedule

MIN_BASE_CONTEXT = 16
MIN_SEQUENCE = 8


def recipe_reference_lr(recipe: Recipe) -> float:
    """The recipe's LR that maps onto the target base's peak LR: the recipe base's peak LR; else
    10× the LR where the base left off (a cosine to 10% of peak, the common choice); else the
    largest LR the recipe states."""
    if recipe.base.peak_lr:
        return recipe.base.peak_lr
    if recipe.base.lr_at_end:
        return recipe.base.lr_at_end * 10
    candidates = [0.0]
    for stage in recipe.stages:
        steps = stage.total_steps() or 1000
        with contextlib.suppress(ValueError):
            candidates.append(
                max(stage.schedule.lr_at(s, steps, recipe.base.lr_at_end) for s in range(0, steps, max(1, steps // 50)))
            )
    top = max(candidates)
    if top <= 0 and all(stage.schedule.type in ("unknown", "from_base") for stage in recipe.stages):
        return 1.0  # no LR to scale: unknown schedules start from where the target base left off (noted)
    if top <= 0:
        raise MidtrainError.single(
            f"recipe {recipe.id} states no LR at all (no base.peak_lr or base.lr_at_end, and no stage schedule "
            "with a number); it cannot be scaled (option --set)",
            expected="an LR, e.g. --set base.lr_at_end=3e-5 (the LR where the base's pre-training left off)",
            found="no LR",
        )
    return top


def base_end_lr(recipe: Recipe, peak: float, lr_factor: float) -> tuple[float, str | None]:
    """Where the target base's LR left off: the recipe base's end/peak ratio applied to `peak`; else
    the recipe's end LR scaled; else 10% of peak (noted)."""
    if recipe.base.lr_at_end and recipe.base.peak_lr:
        return peak * recipe.base.lr_at_end / recipe.base.peak_lr, None
    if recipe.base.lr_at_end:
        return recipe.base.lr_at_end * lr_factor, None
    return peak * 0.1, "the recipe does not say where its base's LR ended; a from_base start uses 10% of the peak LR"


def context_mapping(recipe: Recipe, base_context: int, max_context: int | None) -> tuple[int, float, str | None]:
    """The base context to plan from and the factor mapping recipe lengths onto it, so that the
    recipe's extension ratio (final context / base context) is kept. Shrinks the base context when
    `max_context` cannot hold the ratio; refuses when that leaves too little."""
    ratio = recipe.longest_context() / recipe.base.context_length
    note = None
    if max_context and base_context * ratio > max_context:
        shrunk = int(max_context // ratio)
        if shrunk < MIN_BASE_CONTEXT:
            raise MidtrainError.single(
                f"recipe {recipe.id} extends the context {ratio:g}× ({recipe.base.context_length:,} → {recipe.longest_context():,}); "
                f"the longest context here is {max_context} tokens, so the base would get {shrunk} tokens "
                f"(< {MIN_BASE_CONTEXT}). Use a larger scale or a longer --context",
                expected=f"extension ratio ≤ {max_context // MIN_BASE_CONTEXT}",
                found=f"{ratio:g}",
            )
        note = f"base context {shrunk} instead of {base_context} so that the {ratio:g}× extension fits in {max_context} tokens"
        base_context = shrunk
    return base_context, base_context / recipe.base.context_length, note


def sequence_length(recipe_length: int, length_factor: float) -> int:
    return max(round(recipe_length * length_factor), MIN_SEQUENCE)


def stage_token_shares(recipe: Recipe) -> list[float]:
    """Each stage's share of the recipe's mid-training tokens (one run each)."""
    tokens = [s.total_tokens() or 0.0 for s in recipe.stages]
    total = sum(tokens)
    if total <= 0:
        return [1.0 / len(tokens)] * len(tokens)
    return [t / total for t in tokens]


def fit_batch(tokens_per_step: float, sequence: int, micro_tokens: float | None) -> tuple[int, int]:
    """Global batch (sequences per step) and the largest micro-batch that divides it."""
    global_batch = max(int(tokens_per_step // sequence), 1)
    micro = max(1, min(global_batch, int((micro_tokens or tokens_per_step) // sequence)))
    while global_batch % micro:
        micro -= 1
    return global_batch, micro


def steps_for(tokens: float, global_batch: int, sequence: int) -> int:
    return round(tokens / (global_batch * sequence))


def tokens_per_step_for_budget(
    recipe_tokens_per_step: float, stage_tokens: float, sequence: int, min_steps: int
) -> float:
    """Own base: keep the recipe's batch when the budget allows `min_steps` steps; otherwise shrink
    it so that it does (never below one sequence)."""
    return max(min(recipe_tokens_per_step, stage_tokens / min_steps), float(sequence))


def scale_lr_fields(data: dict[str, Any], lr_factor: float) -> dict[str, Any]:
    for key in ("lr", "start_lr", "end_lr", "peak_lr", "min_lr", "max_lr"):
        if key in data:
            data[key] = data[key] * lr_factor
    for phase in data.get("phases", []):
        phase["lr"] *= lr_factor
    return data


def scale_schedule(
    schedule: Schedule, lr_factor: float, recipe_steps: int, token_ratio: float, tokens_per_step: float
) -> dict[str, Any]:
    """The schedule with LRs × lr_factor and step counts turned into fractions of the stage."""
    data = scale_lr_fields(schedule.model_dump(mode="json", exclude_none=True), lr_factor)
    steps = max(recipe_steps, 1)
    for key, fraction in (
        ("warmup_steps", "warmup_fraction"),
        ("decay_steps", "decay_fraction"),
        ("half_life_steps", "half_life_fraction"),
    ):
        if key in data:
            data[fraction] = min(data.pop(key) / steps, 1.0)
    if data.get("type") == "power":
        # lr = β·a·n^b: with n scaled by r the same curve needs a' = a · r^(-b) (and × the LR factor).
        data["a"] = data["a"] * lr_factor * token_ratio ** (-data["b"])
        data["tokens_before"] = data.get("tokens_before", 0.0) * token_ratio
        data["tokens_per_step"] = tokens_per_step
    return data


def scale_rope(rope: Any, length_factor: float, theta_factor: float) -> dict[str, Any] | None:
    """RoPE method and factors are kept; a new θ keeps its ratio to the base's own θ; original
    lengths move to the scaled context."""
    if rope is None:
        return None
    data = rope.model_dump(mode="json", exclude_none=True)
    data.pop("applies_to", None)
    if "theta" in data:
        data["theta"] = float(data["theta"] * theta_factor)
    scaling = data.get("scaling")
    if scaling and "original_max_position_embeddings" in scaling:
        scaling["original_max_position_embeddings"] = max(
            round(scaling["original_max_position_embeddings"] * length_factor), MIN_SEQUENCE
        )
    return data


def lr_is_known(schedule_type: str, base_lr: float | None) -> bool:
    return not (schedule_type == "from_base" and base_lr is None)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
