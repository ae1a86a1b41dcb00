"""Which checkpoint each stage of a recipe starts from, and the RoPE θ in force there.

A stage's `init` is 'base', 'previous' (the default), the name of an earlier stage, or the name of a
merge of earlier stages. The θ a stage starts with is the θ its init ended with, so a branch that
restarts from the base (OLMo 2's second anneal, `init: base`) changes θ from the base's value, not
from the stage printed above it. Plain data, no Rich: `show` and `diff` both use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from midtrain.schema.recipe import Recipe


def init_index(recipe: Recipe, index: int) -> int | None:
    """Index of the stage stage `index` starts from; None for the base.

    A merge counts as its first input (merges average stages that share their RoPE settings).
    Unknown names fall back to the previous stage, as training does.
    """
    names = {stage.name: i for i, stage in enumerate(recipe.stages[:index])}
    merges = {merge.name: merge for merge in recipe.merges}
    init = recipe.stages[index].init
    seen: set[str] = set()
    while init in merges and init not in seen and merges[init].inputs:
        seen.add(init)
        init = merges[init].inputs[0].stage
    if init == "base":
        return None
    if init in names:
        return names[init]
    return index - 1 if index > 0 else None


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
