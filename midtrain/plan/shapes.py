"""Planning the published shapes beyond budget, batch and schedule: unknown values, batch ramps,
fill-in-the-middle, mixture ramps, depth up-scaling, branch points, optimizer-state carry-over and
per-layer attention. Each function maps one recipe field onto the run specification at the target
and says in the plan's notes what it changed or could not carry out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError
from midtrain.plan import rules
from midtrain.schema.base import UNKNOWN, Category

if TYPE_CHECKING:
    from midtrain.schema.architecture import Attention
    from midtrain.schema.recipe import Recipe
    from midtrain.schema.registry import Registry
    from midtrain.schema.schedule import Schedule
    from midtrain.schema.stage import Stage

DEFAULT_FIM_TOKENS = {"prefix": "<|fim_prefix|>", "middle": "<|fim_middle|>", "suffix": "<|fim_suffix|>"}


# ---------------------------------------------------------------- unknown values


def refuse_unknown_budgets(recipe: Recipe) -> None:
    """A stage whose budget is `unknown` cannot be sized: say which, and how to give one."""
    missing = [
        stage for stage in recipe.stages if stage.total_tokens() is None and UNKNOWN in (stage.tokens, stage.steps)
    ]
    if not missing:
        return
    names = ", ".join(f"stages[{s.name}].tokens" for s in missing)
    first = missing[0].name
    raise MidtrainError.single(
        f"the recipe gives no budget for {names} ('unknown'): plan cannot size "
        f"{'that stage' if len(missing) == 1 else 'those stages'} (option --set)",
        expected=f"a token count, e.g. --set stages.{first}.tokens=20B",
        found=UNKNOWN,
    )


def planned_schedule(recipe: Recipe, stage: Stage, notes: list[str]) -> Schedule:
    """The stage's schedule, or the flagged default that stands in for an `unknown` one."""
    schedule = stage.schedule
    if schedule.type != "unknown":
        return schedule
    filled = schedule.filled()
    start = (
        "the LR where the recipe's base left off"
        if recipe.base.lr_at_end
        else "a default start LR (the recipe gives no base.lr_at_end)"
    )
    notes.append(
        f"stages[{stage.name}].schedule is unknown in the recipe: planned as {filled.describe()} from {start} "
        "- a default, not the paper's"
    )
    return filled


def batch_note(stage: Stage) -> str:
    if stage.batch == UNKNOWN:
        return f"stages[{stage.name}].batch is unknown in the recipe"
    return f"stage {stage.name}: no batch stated"


# ---------------------------------------------------------------- batch ramps


def batch_ramp(
    stage: Stage, global_batch: int, micro: int, steps: int, notes: list[str]
) -> tuple[list[dict[str, int]], int]:
    """The recipe's batch ramp at the target: each later batch keeps its ratio to the starting batch and
    starts at the same share of the stage's tokens. Returns the ramp (steps, batches) and the new step
    count, so that the stage's token budget is unchanged."""
    batch = stage.known_batch
    if batch is None or not batch.ramp:
        return [], steps
    start_tokens = stage.tokens_per_step() or 1.0
    total = stage.total_tokens()
    marks: list[float] = []
    for index, step in enumerate(batch.ramp):
        if step.after_tokens is not None and total:
            marks.append(min(step.after_tokens / total, 0.99))
        else:
            marks.append((index + 1) / (len(batch.ramp) + 1))
            notes.append(
                f"stage {stage.name}: the batch grows {step.when or 'at an unstated point'}; placed at "
                f"{marks[-1]:.0%} of the stage's tokens"
            )
    budget = steps * global_batch  # sequences of the stage at the target
    batches = [global_batch]
    for step in batch.ramp:
        ratio = (step.sequences * stage.sequence_length if step.sequences else step.tokens or 0.0) / start_tokens
        batches.append(max(micro, round(global_batch * ratio / micro) * micro))
    edges = [0.0, *marks, 1.0]
    ramp: list[dict[str, int]] = []
    done = 0
    for index, size in enumerate(batches):
        share = edges[index + 1] - edges[index]
        count = max(1, math.ceil(budget * share / size))
        if index:
            ramp.append({"step": done, "global_batch": size})
        done += count
    return ramp, max(done, ramp[-1]["step"] + 1 if ramp else done)


# ---------------------------------------------------------------- data: FIM and mixture ramps


def fim_spec(
    stage: Stage, registry: Registry, stream_of: Any, stand_in: bool, notes: list[str]
) -> dict[str, Any] | None:
    """The stage's fill-in-the-middle settings for the data path; the built-in tokenizer's sentinels at
    the stand-in scales."""
    fim = stage.fim
    if fim is None or fim.rate == 0:
        return None
    names = fim.applies_to or [
        c.source for c in stage.mixture.components if registry.sources[c.source].category == Category.code
    ]
    if not names:
        notes.append(
            f"stage {stage.name}: FIM is set but no source is code and none is named in applies_to; not applied"
        )
        return None
    tokens = fim.tokens.model_dump() if fim.tokens else dict(DEFAULT_FIM_TOKENS)
    if stand_in and tokens != DEFAULT_FIM_TOKENS:
        notes.append(
            f"stage {stage.name}: FIM uses the built-in tokenizer's sentinels "
            f"{DEFAULT_FIM_TOKENS['prefix']} {DEFAULT_FIM_TOKENS['suffix']} {DEFAULT_FIM_TOKENS['middle']} "
            f"in place of the recipe's {tokens['prefix']} {tokens['suffix']} {tokens['middle']}"
        )
        tokens = dict(DEFAULT_FIM_TOKENS)
    streams = sorted({stream_of(name) for name in names})
    return {"rate": fim.rate, "spm_rate": fim.spm_rate, "level": fim.level, **tokens, "streams": streams}


def streams_end(stage: Stage, stream_of: Any, streams: dict[str, float]) -> dict[str, float] | None:
    """The stream shares at the end of a stage whose mixture ramps (None for a flat mixture)."""
    if not stage.mixture.is_ramped():
        return None
    end: dict[str, float] = dict.fromkeys(streams, 0.0)
    for name, share in stage.mixture.end_shares().items():
        end[stream_of(name)] += share
    return end


# ---------------------------------------------------------------- model: depth up-scaling and layers


def upscale_segments(stage: Stage, layers: int, notes: list[str]) -> tuple[list[tuple[int, int]] | None, int]:
    """The stage's layer ranges for a model of `layers` layers (the published ranges scaled when the
    target has another depth), and the depth after it."""
    upscale = stage.upscale
    if upscale is None:
        return None, layers
    if layers == upscale.from_layers:
        segments = list(upscale.segments)
    else:
        factor = layers / upscale.from_layers
        segments = []
        for start, end in upscale.segments:
            low = min(round(start * factor), layers - 1)
            segments.append((low, max(low + 1, min(round(end * factor), layers))))
        notes.append(
            f"stage {stage.name}: depth up-scaling {upscale.from_layers} → {upscale.to_layers} layers runs as "
            f"{layers} → {sum(b - a for a, b in segments)} (ranges {segments})"
        )
    return segments, sum(end - start for start, end in segments)


def stand_in_layers(
    attention: Attention | None, layers: int, length_factor: float, stand_in: str, notes: list[str]
) -> dict[str, Any]:
    """NewModel fields for the recipe's per-layer attention at the stand-in's depth."""
    if attention is None:
        return {}
    kinds = attention.layer_kinds(layers)
    if not any(kind in ("full", "nope") for kind in kinds):
        kinds[-1] = "full"
        notes.append(
            f"attention: at {layers} layers the pattern has no full-attention layer; the last one is made full"
        )
    unsupported = sorted({kind for kind in kinds if kind in ("linear", "mamba", "mamba+attention", "chunked")})
    if unsupported:
        notes.append(
            f"attention: {', '.join(unsupported)} layers run as "
            + ("sliding-window" if unsupported == ["chunked"] else "full or sliding")
            + f" attention in the {stand_in} stand-in"
        )
    window = attention.sliding_window or attention.chunk_size
    out: dict[str, Any] = {
        "layer_types": ["sliding_attention" if kind in ("sliding", "chunked") else "full_attention" for kind in kinds]
    }
    if "sliding_attention" in out["layer_types"]:
        out["sliding_window"] = rules.sequence_length(window or 4096, length_factor)
    if "nope" in kinds:
        out["no_rope_layers"] = [0 if kind == "nope" else 1 for kind in kinds]
    return out


# ---------------------------------------------------------------- branch points


def branch_step(stage: Stage, parent: Stage, parent_steps: int) -> int:
    """The parent's step at which a branch (init_at) starts, at the target."""
    at = stage.init_at
    if at is None:
        return parent_steps
    if at.fraction is not None:
        fraction = at.fraction
    else:
        total = parent.total_tokens() or 1.0
        fraction = min((at.tokens or 0.0) / total, 1.0)
    return min(max(1, round(fraction * parent_steps)), parent_steps)
