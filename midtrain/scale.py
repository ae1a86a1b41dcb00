"""Recipe + scale profile -> a concrete, printed run plan.

What scaling keeps: the token proportions between stages (subject to a minimum number of steps per
stage, reported when it applies), mixture shares, schedule shapes, every LR relative to the base's
peak LR, the context-extension ratio, the RoPE method and factors, the number of repeated runs and
the merges. What it changes: absolute sizes (model, tokens, batch, context) and, at tiny scale, the
data (each source's built-in stand-in). Nothing is hidden: every adjustment is listed in `notes`.

At `full` scale the plan is the published setup itself: the published base (`from_pretrained` by
hub id and revision), the recipe's sources (`load_dataset`), budgets, batches and LRs, with a
compute estimate.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError
from midtrain.schema.base import FAMILY_ARCHITECTURES
from midtrain.schema.recipe import Recipe
from midtrain.schema.schedule import lr_after_warmup

H100_BF16_FLOPS = 989e12  # dense bf16 peak of an H100 SXM (and of an H200, same compute die)
ASSUMED_MFU = 0.40
DEFAULT_TOKENS_PER_STEP = 4 * 1024 * 1024  # used at full scale when a recipe states no batch (noted)
MIN_BASE_CONTEXT = 16
TINY_BASE_MIX = {"prose.train": 0.80, "code.train": 0.15, "math.train": 0.05}


@dataclass
class RunPlan:
    """One training run (one stage × one seed/data order)."""

    name: str
    stage: str
    index: int
    init: str  # "base", a run name or a merge name
    spec: dict[str, Any]  # a midtrain.train.config.RunSpec, as JSON


@dataclass
class StagePlan:
    name: str
    kind: str
    runs: list[str]
    tokens_per_run: int
    steps: int
    sequence_length: int
    global_batch: int
    micro_batch: int
    lr_start: float
    lr_end: float
    schedule: str
    rope: str
    mixture: dict[str, dict[str, Any]]
    streams: dict[str, float]
    init: str


@dataclass
class MergePlan:
    name: str
    method: str
    inputs: list[str]  # run names (or merge names)
    weights: list[float] | None
    source_of: str | None = None  # polyak/ema: the run whose averaged model this is


@dataclass
class Plan:
    recipe: str
    scale: str
    model: dict[str, Any]
    data: dict[str, Any]
    base: dict[str, Any]
    stages: list[StagePlan]
    runs: list[RunPlan]
    merges: list[MergePlan]
    final: str
    evaluation: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    compute: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def output_of(self, name: str) -> str:
        """The model directory a run or merge produces (relative to the pipeline root)."""
        for merge in self.merges:
            if merge.name == name:
                if merge.source_of:
                    return f"runs/{self.recipe}/mid/{merge.source_of}/model-{merge.method}"
                return f"runs/{self.recipe}/mid/{name}"
        if name == "base":
            return f"runs/{self.recipe}/base/model"
        return f"runs/{self.recipe}/mid/{name}/model"


# ---------------------------------------------------------------- overrides


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`--set stages.anneal.tokens=20B` / `stages[0].mixture.components[dolmino-math].share=0.3` on plain recipe data."""
    import re

    from midtrain.yamlio import load_yaml  # noqa: F401  (YAML scalars below use the same rules)

    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key:
            raise MidtrainError.single("an override is KEY=VALUE", found=item, expected="e.g. stages.anneal.tokens=20B")
        value = _parse_scalar(value_text)
        parts = [p for p in re.split(r"\.|\[|\]", key) if p != ""]
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                index = _list_index(node, part, key)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if part not in node:
                        raise MidtrainError.single(f"override path {key!r}: no field {part!r}", found=", ".join(map(str, node)))
                    node = node[part]
            else:
                raise MidtrainError.single(f"override path {key!r} goes below a value at {part!r}")
    return data


def _list_index(items: list[Any], part: str, key: str) -> int:
    if part.isdigit():
        if int(part) >= len(items):
            raise MidtrainError.single(f"override path {key!r}: index {part} out of range", expected=f"< {len(items)}")
        return int(part)
    for index, item in enumerate(items):
        if isinstance(item, dict) and part in (item.get("name"), item.get("source"), item.get("benchmark")):
            return index
    names = [str(i.get("name") or i.get("source")) for i in items if isinstance(i, dict)]
    raise MidtrainError.single(f"override path {key!r}: no item named {part!r}", expected=", ".join(names), found=part)


def _parse_scalar(text: str) -> Any:
    from ruamel.yaml import YAML

    try:
        return YAML(typ="safe", pure=True).load(text) if text.strip() else ""
    except Exception:
        return text


# ---------------------------------------------------------------- LR and schedule scaling


def recipe_reference_lr(recipe: Recipe) -> float:
    """The LR that maps to the stand-in's peak: the base's peak LR; else 10× the LR where the base left
    off (a cosine to 10% of peak, the common choice); else the largest LR the recipe states."""
    if recipe.base.peak_lr:
        return recipe.base.peak_lr
    if recipe.base.lr_at_end:
        return recipe.base.lr_at_end * 10
    candidates = [0.0]
    for stage in recipe.stages:
        steps = stage.total_steps() or 1000
        try:
            candidates.append(max(stage.schedule.lr_at(s, steps, recipe.base.lr_at_end) for s in range(0, steps, max(1, steps // 50))))
        except ValueError:
            pass
    top = max(candidates)
    if top <= 0:
        raise MidtrainError.single(f"recipe {recipe.id} states no LR at all; it cannot be scaled")
    return top


def scale_schedule(schedule: Any, lr_factor: float, recipe_steps: int, token_ratio: float, tiny_tokens_per_step: float) -> dict[str, Any]:
    """The schedule with LRs × lr_factor and step counts turned into fractions of the stage."""
    data = schedule.model_dump(mode="json", exclude_none=True)
    for key in ("lr", "start_lr", "end_lr", "peak_lr", "min_lr", "max_lr"):
        if key in data:
            data[key] = data[key] * lr_factor
    for phase in data.get("phases", []):
        phase["lr"] *= lr_factor
    steps = max(recipe_steps, 1)
    if "warmup_steps" in data:
        data["warmup_fraction"] = min(data.pop("warmup_steps") / steps, 1.0)
    if "decay_steps" in data:
        data["decay_fraction"] = min(data.pop("decay_steps") / steps, 1.0)
    if "half_life_steps" in data:
        data["half_life_fraction"] = min(data.pop("half_life_steps") / steps, 1.0)
    if data.get("type") == "power":
        # lr = β·a·n^b: with n scaled by r the same curve needs a' = a · r^(-b) (and × the LR factor).
        data["a"] = data["a"] * lr_factor * token_ratio ** (-data["b"])
        data["tokens_before"] = data.get("tokens_before", 0.0) * token_ratio
        data["tokens_per_step"] = tiny_tokens_per_step
    return data


# ---------------------------------------------------------------- the planner


def _stream_of(registry: Any, source: str) -> str:
    return f"{registry.sources[source].builtin.value}.train"


def _context_plan(recipe: Recipe, profile: Any, notes: list[str]) -> tuple[int, float]:
    """Tiny base context, and the factor that maps recipe lengths onto it (the ratio is kept)."""
    ratio = recipe.final_context() / recipe.base.context_length
    base_context = profile.base_context or 128
    if profile.max_context and base_context * ratio > profile.max_context:
        shrunk = int(profile.max_context // ratio)
        if shrunk < MIN_BASE_CONTEXT:
            raise MidtrainError.single(
                f"recipe {recipe.id} extends the context {ratio:g}× ({recipe.base.context_length:,} → {recipe.final_context():,}); "
                f"at this scale the longest context is {profile.max_context} tokens, so the base would get {shrunk} tokens "
                f"(< {MIN_BASE_CONTEXT}). This scale cannot hold the recipe's context ratio; use a larger scale",
                expected=f"extension ratio ≤ {profile.max_context // MIN_BASE_CONTEXT}", found=f"{ratio:g}",
            )
        notes.append(f"base context {shrunk} instead of {base_context} so that the {ratio:g}× extension fits in {profile.max_context} tokens")
        base_context = shrunk
    return base_context, base_context / recipe.base.context_length


def plan_recipe(recipe: Recipe, registry: Any, scale: str, seed: int = 0) -> Plan:
    if scale not in registry.scales:
        raise MidtrainError.single(f"unknown scale {scale!r}", expected=", ".join(registry.scales), found=scale)
    profile = registry.scales[scale]
    if profile.model == "published":
        return _plan_full(recipe, registry, scale, seed)
    return _plan_scaled(recipe, registry, scale, profile, seed)


def _plan_scaled(recipe: Recipe, registry: Any, scale: str, profile: Any, seed: int) -> Plan:
    notes: list[str] = []
    model_entry = registry.models[recipe.base.model]
    dims = (profile.dims or model_entry.tiny).model_dump()
    stand_in = FAMILY_ARCHITECTURES[recipe.family][1]
    if stand_in != recipe.family.value:
        notes.append(f"family {recipe.family.value} ({recipe.architecture_class()}) runs as a {stand_in} stand-in at this scale")
    base_context, length_factor = _context_plan(recipe, profile, notes)
    base_theta = recipe.base.rope_theta or model_entry.rope_theta
    vocab = profile.vocab_size or 2048
    tokens_per_step = profile.tokens_per_step or 2048
    micro_tokens = profile.micro_batch_tokens or tokens_per_step
    peak = profile.peak_lr or 3e-3
    lr_factor = peak / recipe_reference_lr(recipe)
    end_ratio = (recipe.base.lr_at_end / recipe.base.peak_lr) if recipe.base.lr_at_end and recipe.base.peak_lr else None
    max_context = max(int(s.sequence_length * length_factor) for s in recipe.stages)
    model = {
        "family": stand_in, "published_family": recipe.family.value, "dims": dims, "vocab_size": vocab,
        "base_context": base_context, "max_context": max_context, "rope_theta": base_theta,
    }
    data = {"scale": scale, "kind": "builtin", "vocab_size": vocab, "seed": seed}
    def trainable(settings: Any) -> dict[str, Any]:
        data = settings.model_dump(mode="json")
        if data["type"] not in ("adamw", "adam"):
            note = f"optimizer {data['type']} runs as AdamW at this scale (the built-in trainer implements AdamW/Adam)"
            if note not in notes:
                notes.append(note)
            data["type"] = "adamw"
        return data

    optimizer = trainable(recipe.optimizer)
    base_steps = max(int((profile.base_tokens or 1.5e6) // tokens_per_step), profile.min_steps)
    base_end = peak * end_ratio if end_ratio is not None else (recipe.base.lr_at_end * lr_factor if recipe.base.lr_at_end else peak * 0.1)
    if not recipe.base.peak_lr:
        notes.append("the base's peak LR is not in the recipe: its LRs are scaled as if the base peaked at "
                     + ("10× the LR where it left off" if recipe.base.lr_at_end else "the recipe's largest LR"))
    base_spec = _spec(
        name=f"{recipe.id}/base", out=f"runs/{recipe.id}/base", init={"family": stand_in, "dims": dims, "vocab_size": vocab,
        "rope_theta": base_theta, "max_position_embeddings": base_context}, streams=TINY_BASE_MIX, sequence_length=base_context,
        tokens_per_step=tokens_per_step, micro_tokens=micro_tokens, steps=base_steps,
        schedule={"type": "cosine", "peak_lr": peak, "min_lr": base_end, "warmup_fraction": 0.02}, optimizer=optimizer,
        seed=seed, data_seed=seed, precision=profile.precision, checkpoint_every=max(base_steps // 4, 1),
    )
    base = {"kind": "pretrain", "run": "base", "tokens": base_steps * tokens_per_step, "steps": base_steps, "mix": TINY_BASE_MIX,
            "lr_end": base_end, "note": "a stand-in base pretrained on a general-heavy built-in mix, ending at the LR where the recipe's base left off"}

    # token budget per stage, keeping the recipe's proportions (one run each)
    recipe_tokens = [s.total_tokens() or 0.0 for s in recipe.stages]
    total = sum(recipe_tokens) or 1.0
    budget = profile.mid_training_tokens or 5e5
    stages: list[StagePlan] = []
    runs: list[RunPlan] = []
    merges: list[MergePlan] = []
    previous_output = "base"
    theta = base_theta
    produced: dict[str, str] = {}  # stage name -> what "previous" means after it (run 0 or its merge)
    for stage, recipe_stage_tokens in zip(recipe.stages, recipe_tokens):
        sequence_length = max(int(round(stage.sequence_length * length_factor)), 8)
        global_batch = max(tokens_per_step // sequence_length, 1)
        steps = int(round(budget * recipe_stage_tokens / total / (global_batch * sequence_length)))
        if steps < profile.min_steps:
            notes.append(f"stage {stage.name}: {steps} steps raised to the minimum of {profile.min_steps} "
                         f"({recipe_stage_tokens / total:.2%} of the recipe's mid-training tokens)")
            steps = profile.min_steps
        micro = max(1, min(global_batch, micro_tokens // sequence_length))
        while global_batch % micro:
            micro -= 1
        recipe_steps = stage.total_steps() or steps
        token_ratio = (steps * global_batch * sequence_length) / max(recipe_stage_tokens, 1.0)
        schedule = scale_schedule(stage.schedule, lr_factor, recipe_steps, token_ratio, tokens_per_step)
        rope = _scale_rope(stage.rope, length_factor)
        if stage.rope and stage.rope.theta:
            theta = stage.rope.theta
        streams: dict[str, float] = {}
        mixture = {}
        for name, share in stage.mixture.shares().items():
            stream = _stream_of(registry, name)
            streams[stream] = streams.get(stream, 0.0) + share
            mixture[name] = {"share": share, "stream": stream}
        count = stage.runs.count
        if profile.max_runs and count > profile.max_runs:
            notes.append(f"stage {stage.name}: {count} runs cut to {profile.max_runs}")
            count = profile.max_runs
        init = {"base": "base", "previous": previous_output}.get(stage.init, produced.get(stage.init, stage.init))
        names = [stage.name] if count == 1 else [f"{stage.name}-{i}" for i in range(count)]
        seeds = stage.runs.seeds or list(range(count))
        polyak = next((m for m in recipe.merges if m.method == "polyak" and any(i.stage == stage.name for i in m.inputs)), None)
        ema = next((m for m in recipe.merges if m.method == "ema" and any(i.stage == stage.name for i in m.inputs)), None)
        for index, run_name in enumerate(names):
            spec = _spec(
                name=f"{recipe.id}/{run_name}", out=f"runs/{recipe.id}/mid/{run_name}", init={"path": "__INIT__"}, streams=streams,
                sequence_length=sequence_length, tokens_per_step=global_batch * sequence_length, micro_tokens=micro * sequence_length,
                steps=steps, schedule=schedule, optimizer=trainable(stage.optimizer or recipe.optimizer),
                seed=seed + index, data_seed=seed * 1000 + seeds[index],
                precision=profile.precision, checkpoint_every=max(steps // 4, 1),
                rope=rope, max_position_embeddings=max_context, z_loss=stage.z_loss,
                base_lr=(base_end if stage.schedule.type == "from_base" else None),
                polyak={"checkpoints": min(polyak.checkpoints or 3, steps)} if polyak else None,
                ema_decay=ema.ema_decay if ema else None,
            )
            runs.append(RunPlan(run_name, stage.name, index, init, spec))
        lr_start = lr_after_warmup(_schedule_model(schedule), steps, base_end)
        lr_end = _schedule_model(schedule).lr_at(steps - 1, steps, base_end)
        stages.append(StagePlan(
            name=stage.name, kind=stage.kind.value, runs=names, tokens_per_run=steps * global_batch * sequence_length, steps=steps,
            sequence_length=sequence_length, global_batch=global_batch, micro_batch=micro, lr_start=lr_start, lr_end=lr_end,
            schedule=_schedule_model(schedule).describe(), rope=(stage.rope.describe(theta) if stage.rope else "unchanged"),
            mixture=mixture, streams=streams, init=init,
        ))
        produced[stage.name] = names[0]
        previous_output = _resolve_merges(recipe, stage.name, runs, merges, produced)
    final = recipe.final or (previous_output if recipe.stages else "base")
    final = produced.get(final, final)
    plan = Plan(recipe.id, scale, model, data, base, stages, runs, merges, final, {}, notes)
    for run in plan.runs:
        run.spec["init"] = {"path": plan.output_of(run.init)} if run.init != "base" else {"path": plan.output_of("base")}
    plan.base["spec"] = base_spec
    plan.evaluation = _evaluation(plan, recipe, profile)
    return plan


def _schedule_model(data: dict[str, Any]) -> Any:
    from pydantic import TypeAdapter

    from midtrain.schema.schedule import Schedule

    return TypeAdapter(Schedule).validate_python(data)


def _scale_rope(rope: Any, length_factor: float) -> dict[str, Any] | None:
    """RoPE method, θ and factors are kept; original lengths move to the scaled context."""
    if rope is None:
        return None
    data = rope.model_dump(mode="json", exclude_none=True)
    data.pop("applies_to", None)
    scaling = data.get("scaling")
    if scaling and "original_max_position_embeddings" in scaling:
        scaling["original_max_position_embeddings"] = max(int(round(scaling["original_max_position_embeddings"] * length_factor)), 8)
    return data


def _resolve_merges(recipe: Recipe, stage: str, runs: list[RunPlan], merges: list[MergePlan], produced: dict[str, str]) -> str:
    """Plan the merges whose inputs are complete once `stage` has run (in recipe order); returns what
    "previous" means for the next stage: the stage's first run, or the merge that consumed it."""
    previous = produced[stage]
    for merge in recipe.merges:
        if merge.name in {m.name for m in merges}:
            continue
        consumed = [i.stage for i in merge.inputs]
        if stage in consumed and all(c in produced or c in {m.name for m in merges} for c in consumed):
            merges.append(_plan_merge(merge, recipe, runs, merges))
            produced[merge.name] = merge.name
            produced[stage] = merge.name
            previous = merge.name
    return previous


def _plan_merge(merge: Any, recipe: Recipe, runs: list[RunPlan], merges: list[MergePlan]) -> MergePlan:
    if merge.method in ("polyak", "ema"):
        stage = merge.inputs[0].stage
        run = next(r for r in runs if r.stage == stage)
        return MergePlan(merge.name, merge.method, [run.name], None, source_of=run.name)
    inputs: list[str] = []
    weights: list[float] = []
    for item in merge.inputs:
        chosen = [r.name for r in runs if r.stage == item.stage and (item.run is None or r.index == item.run)]
        if not chosen and item.stage in {m.name for m in merges}:
            chosen = [item.stage]
        inputs.extend(chosen)
        weights.extend([(item.weight or 1.0) / len(chosen)] * len(chosen))
    if merge.method == "uniform":
        return MergePlan(merge.name, "uniform", inputs, None)
    total = sum(weights)
    return MergePlan(merge.name, "weighted", inputs, [w / total for w in weights])


def _spec(*, name: str, out: str, init: dict[str, Any], streams: dict[str, float], sequence_length: int, tokens_per_step: int,
          micro_tokens: int, steps: int, schedule: dict[str, Any], optimizer: dict[str, Any], seed: int, data_seed: int,
          precision: str, checkpoint_every: int, **extra: Any) -> dict[str, Any]:
    global_batch = max(tokens_per_step // sequence_length, 1)
    micro = max(1, min(global_batch, micro_tokens // sequence_length))
    while global_batch % micro:
        micro -= 1
    spec = {
        "name": name, "out": out, "init": init, "tokenizer": "__DATA__/tokenizer", "data": "__DATA__",
        "streams": streams, "sequence_length": sequence_length, "global_batch": global_batch, "micro_batch": micro,
        "steps": steps, "schedule": schedule, "optimizer": optimizer, "seed": seed, "data_seed": data_seed,
        "precision": precision if precision in ("fp32", "bf16") else "fp32", "checkpoint_every": checkpoint_every,
        "max_epochs": {}, "on_repeat": "warn",
    }
    spec.update({k: v for k, v in extra.items() if v is not None})
    return spec


def _evaluation(plan: Plan, recipe: Recipe, profile: Any) -> dict[str, Any]:
    base_context = plan.model["base_context"]
    length = min(max(plan.model["max_context"], base_context * 4), profile.max_context or plan.model["max_context"])
    lengths = sorted({base_context, min(base_context * 2, length), length})
    return {
        "base": plan.output_of("base"),
        "final": plan.output_of(plan.final),
        "domains": {"prose": "prose.heldout", "code": "code.heldout", "math": "math.heldout", "qa": "qa.heldout"},
        "sequence_length": base_context,
        "sequences": profile.eval_sequences or 64,
        "position": {"stream": "longdoc.heldout", "length": length, "base_context": base_context},
        "math_exact_match": {"problems": min(100, profile.eval_sequences or 64), "max_new_tokens": 64},
        "retrieval": {"lengths": lengths, "documents": max(4, (profile.eval_sequences or 64) // 2)},
    }


# ---------------------------------------------------------------- full scale


def _plan_full(recipe: Recipe, registry: Any, scale: str, seed: int) -> Plan:
    notes: list[str] = []
    model_entry = registry.models[recipe.base.model]
    if not model_entry.hub_id:
        notes.append(f"base model {recipe.base.model} has no public hub id: point registry/models at a local copy")
    revision = recipe.base.revision or model_entry.revision
    base = {"kind": "published", "hub_id": model_entry.hub_id, "revision": revision, "checkpoint": recipe.base.checkpoint}
    model = {"family": recipe.family.value, "architecture": recipe.architecture_class(), "hub_id": model_entry.hub_id,
             "revision": revision, "parameters": recipe.parameters}
    sources = sorted({c.source for s in recipe.stages for c in s.mixture.components})
    missing = [n for n in sources if not (registry.sources[n].hub_id or registry.sources[n].files)]
    if missing:
        notes.append(f"sources without a public release (set `files:` to your copy): {', '.join(missing)}")
    data = {"scale": scale, "kind": "sources", "sources": sources, "tokenizer": model_entry.hub_id, "revision": revision, "seed": seed}
    stages: list[StagePlan] = []
    runs: list[RunPlan] = []
    merges: list[MergePlan] = []
    previous = "base"
    produced: dict[str, str] = {}
    total_flops = 0.0
    active = recipe.active_parameters or model_entry.active_parameters or recipe.parameters
    for stage in recipe.stages:
        per_step = stage.tokens_per_step()
        if not per_step:
            per_step = DEFAULT_TOKENS_PER_STEP
            notes.append(f"stage {stage.name}: no batch stated; assuming {per_step:,} tokens per step")
        global_batch = max(int(per_step // stage.sequence_length), 1)
        steps = stage.total_steps() or max(1, round((stage.total_tokens() or 0) / per_step))
        streams = {f"{n}.train": s for n, s in stage.mixture.shares().items()}
        init = {"base": "base", "previous": previous}.get(stage.init, produced.get(stage.init, stage.init))
        names = [stage.name] if stage.runs.count == 1 else [f"{stage.name}-{i}" for i in range(stage.runs.count)]
        seeds = stage.runs.seeds or list(range(stage.runs.count))
        for index, run_name in enumerate(names):
            spec = _spec(
                name=f"{recipe.id}/{run_name}", out=f"runs/{recipe.id}/mid/{run_name}", init={"path": "__INIT__"}, streams=streams,
                sequence_length=stage.sequence_length, tokens_per_step=global_batch * stage.sequence_length,
                micro_tokens=stage.sequence_length, steps=steps, schedule=stage.schedule.model_dump(mode="json", exclude_none=True),
                optimizer=(stage.optimizer or recipe.optimizer).model_dump(mode="json"), seed=seed + index, data_seed=seeds[index],
                precision="bf16", checkpoint_every=max(steps // 20, 1), rope=stage.rope.model_dump(mode="json", exclude_none=True) if stage.rope else None,
                max_position_embeddings=recipe.final_context(), z_loss=stage.z_loss, base_lr=recipe.base.lr_at_end if stage.schedule.type == "from_base" else None,
            )
            spec["strategy"] = "fsdp"
            spec["activation_checkpointing"] = True
            spec.pop("rope", None) if spec.get("rope") is None else None
            if spec.get("rope"):
                spec["rope"].pop("applies_to", None)
            runs.append(RunPlan(run_name, stage.name, index, init, spec))
        tokens = steps * global_batch * stage.sequence_length
        attention = 0.0
        if model_entry.layers and model_entry.hidden_size:
            attention = 6 * model_entry.layers * model_entry.hidden_size * stage.sequence_length * tokens
        total_flops += (6 * active * tokens + attention) * len(names)
        lr_start = lr_after_warmup(stage.schedule, steps, recipe.base.lr_at_end) if _lr_known(stage, recipe) else float("nan")
        lr_end = stage.schedule.lr_at(steps - 1, steps, recipe.base.lr_at_end) if _lr_known(stage, recipe) else float("nan")
        stages.append(StagePlan(stage.name, stage.kind.value, names, tokens, steps, stage.sequence_length, global_batch, 1,
                                lr_start, lr_end, stage.schedule.describe(), stage.rope.describe(recipe.base.rope_theta) if stage.rope else "unchanged",
                                {n: {"share": s, "stream": f"{n}.train"} for n, s in stage.mixture.shares().items()}, streams, init))
        produced[stage.name] = names[0]
        previous = _resolve_merges(recipe, stage.name, runs, merges, produced)
    final = produced.get(recipe.final or previous, recipe.final or previous)
    plan = Plan(recipe.id, scale, model, data, base, stages, runs, merges, final, {}, notes)
    for run in plan.runs:
        run.spec["init"] = {"path": plan.output_of(run.init)} if run.init != "base" else {"path": model_entry.hub_id or "BASE_MODEL_DIR", "revision": revision}
    gpu_hours = total_flops / (H100_BF16_FLOPS * ASSUMED_MFU) / 3600
    plan.compute = {
        "flops": total_flops, "formula": "6·N_active·D per run" + (" + 6·L·d·S·D attention" if model_entry.layers else " (attention term needs layers/hidden_size in the registry)"),
        "active_parameters": active, "mfu_assumed": ASSUMED_MFU,
        "gpu_hours": {"H100": gpu_hours, "H200": gpu_hours},
        "note": "H100 and H200 share the same bf16 dense peak (989 TFLOP/s); the H200's larger, faster memory helps long contexts, not this estimate",
    }
    plan.evaluation = {"base": "base", "final": plan.output_of(plan.final), "lm_eval": True}
    return plan


def _lr_known(stage: Any, recipe: Recipe) -> bool:
    return not (stage.schedule.type == "from_base" and recipe.base.lr_at_end is None)


# ---------------------------------------------------------------- writing


def write_plan(plan: Plan, directory: Path, data_dir: str) -> dict[str, Path]:
    """plan.json, one run specification per run (and the base), merges, evaluation, data: each its own file
    so that a DVC stage depending on one of them reruns only when it changes."""
    from midtrain.io import write_json

    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def fill(spec: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(spec).replace("__DATA__", data_dir)
        return json.loads(text)

    write_json(directory / "plan.json", plan.to_json())
    written["plan"] = directory / "plan.json"
    write_json(directory / "data.json", {**plan.data, "out": data_dir})
    if "spec" in plan.base:
        write_json(directory / "base.json", fill(plan.base["spec"]))
    else:
        write_json(directory / "base.json", {"published": plan.base, "out": f"runs/{plan.recipe}/base"})
    mid = {
        "recipe": plan.recipe,
        "order": _order(plan),
        "runs": {r.name: fill(r.spec) for r in plan.runs},
        "merges": {m.name: {"method": m.method, "inputs": [plan.output_of(i) for i in m.inputs], "weights": m.weights,
                            "out": plan.output_of(m.name), "source_of": m.source_of} for m in plan.merges},
        "final": plan.output_of(plan.final),
    }
    write_json(directory / "midtrain.json", mid)
    write_json(directory / "eval.json", {**plan.evaluation, "data": data_dir, "recipe": plan.recipe})
    return written


def _order(plan: Plan) -> list[dict[str, str]]:
    """Runs and merges in execution order (merges right after the stage that completes their inputs)."""
    order: list[dict[str, str]] = []
    done: set[str] = set()
    for stage in plan.stages:
        for run in stage.runs:
            order.append({"kind": "run", "name": run})
            done.add(run)
        for merge in plan.merges:
            if merge.name not in done and all(i in done for i in merge.inputs):
                order.append({"kind": "merge", "name": merge.name})
                done.add(merge.name)
    return order


def plan_hash(plan: Plan) -> str:
    return hashlib.sha256(json.dumps(plan.to_json(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def fmt_lr(value: float) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"
