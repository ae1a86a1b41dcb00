"""Which checkpoint each stage of a recipe starts from, and the RoPE θ in force there.

A stage's `init` is 'base', 'previous' (the default), the name of an earlier stage, or the name of a
merge of earlier stages. 'previous' is the nearest earlier main-line stage: side branches
(`branch: true`) are skipped, as `Recipe.init_of` resolves it. The θ a stage starts with is the θ its
init ended with, so a branch that restarts from the base (OLMo 2's second anneal, `init: base`)
changes θ from the base's value, not from the stage printed above it, and the stage after a side
branch continues from the main line, not from the branch. Plain data, no Rich: `show`, `diff`,
`compare` and the published catalogue all use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from midtrain.schema.recipe import Recipe


def init_index(recipe: Recipe, index: int) -> int | None:
    """Index of the stage stage `index` starts from; None for the base.

    A merge counts as its first input (merges average stages that share their RoPE settings).
    Unknown names fall back to the nearest earlier main-line stage, as training does.
    """
    names = {stage.name: i for i, stage in enumerate(recipe.stages[:index])}
    merges = {merge.name: merge for merge in recipe.merges}
    init = recipe.init_of(index)
    seen: set[str] = set()
    while init in merges and init not in seen and merges[init].inputs:
        seen.add(init)
        init = merges[init].inputs[0].stage
    if init == "base":
        return None
    if init in names:
        return names[init]
    return next((i for i in range(index - 1, -1, -1) if not recipe.stages[i].branch), None)


def theta_at_start(recipe: Recipe, index: int) -> float | None:
    """RoPE θ in force when stage `index` starts, following `init` back to the base."""
    start = init_index(recipe, index)
    return recipe.base.rope_theta if start is None else theta_at_end(recipe, start)


def theta_at_end(recipe: Recipe, index: int) -> float | None:
    """RoPE θ in force at the end of stage `index`: its own θ, or the one it started with."""
    rope = recipe.stages[index].rope
    if rope is not None and rope.theta is not None:
        return rope.theta
    return theta_at_start(recipe, index)


def branch_point(recipe: Recipe, index: int) -> str | None:
    """'at 30B tokens' / 'at 60%' of the init stage when stage `index` starts from its middle (`init_at`)."""
    from midtrain.units import fmt_tokens

    at = recipe.stages[index].init_at
    if at is None:
        return None
    if at.tokens is not None:
        return f"at {fmt_tokens(at.tokens)} tokens"
    return f"at {at.fraction:.0%}"


def starts_from(recipe: Recipe, index: int) -> str:
    """What stage `index` starts from, in words: 'base', 'anneal', 'pretrain at 30B tokens (side branch,
    not in the totals)'. 'previous' is resolved (side branches skipped)."""
    init = recipe.init_of(index)
    stage = recipe.stages[index]
    point = branch_point(recipe, index)
    text = init + (f" {point}" if point else "")
    if stage.branch:
        return f"{text} (side branch, not in the totals)"
    if stage.init == "previous" and init != "base" and index and recipe.stages[index - 1].branch:
        return f"{text} (the main line; the side branch above is skipped)"
    return text
