"""Recipe + target -> a typed `Plan`. One stage loop serves every target:

- a stand-in base built here (tiny/small scale profiles);
- the user's own base (`--base HUB_ID|DIR --base-peak-lr LR --tokens N`);
- the recipe's published base (`--scale full`), which is the own-base path with the recipe's
  own base, peak LR, budget and batches.

Both `midtrain plan` and the pipeline's `plan` stage call `plan_request`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError
from midtrain.plan import rules, shapes
from midtrain.plan.bases import ResolvedBase, resolve_base
from midtrain.plan.contract import (
    BaseSummary,
    BenchmarkEval,
    BuiltinData,
    Layout,
    LmEvalSpec,
    MergePlan,
    MergeSpec,
    MidSpec,
    ModelUnderTest,
    OrderItem,
    Plan,
    PlanSummary,
    PositionEval,
    PretrainBase,
    PretrainedBase,
    SourceData,
    StagePlan,
    StandInData,
    StandInEval,
)
from midtrain.plan.request import OwnBase, PlanRequest
from midtrain.schema.base import FAMILY_ARCHITECTURES
from midtrain.schema.recipe import Merge, Recipe
from midtrain.schema.registry import Registry, ScaleProfile
from midtrain.schema.schedule import Schedule
from midtrain.schema.stage import Optimizer, Stage
from midtrain.train.config import NewModel, Pretrained, RunSpec

if TYPE_CHECKING:
    from midtrain.catalog import Catalog

H100_BF16_FLOPS = 989e12  # dense bf16 peak of an H100 SXM (and of an H200, same compute die)
ASSUMED_MFU = 0.40
DEFAULT_TOKENS_PER_STEP = 4 * 1024 * 1024  # a recipe that states no batch (noted)
TINY_BASE_MIX = {"prose.train": 0.80, "code.train": 0.15, "math.train": 0.05}
DOMAINS = {"prose": "prose.heldout", "code": "code.heldout", "math": "math.heldout", "qa": "qa.heldout"}
OBJECTIVE_TASKS = {
    "math": ["gsm8k"],
    "reasoning": ["gsm8k"],
    "code": ["humaneval"],
    "long-context": ["ruler"],
    "general": ["hellaswag", "arc_easy"],
    "knowledge": ["mmlu"],
    "instruction": ["ifeval"],
    "multilingual": ["xnli"],
}
LOCAL_MATH, LOCAL_RETRIEVAL = "midtrain_math", "midtrain_retrieval"


@dataclass
class Target:
    """Everything about where a recipe is applied that does not come from the recipe."""

    kind: str  # "stand-in" or "pretrained"
    family: str
    base_context: int
    length_factor: float
    theta: float
    theta_factor: float
    vocab_size: int
    peak_lr: float
    lr_factor: float
    base_end: float
    budget: float
    min_steps: int
    max_runs: int | None
    micro_tokens: float | None  # None with a pretrained base: the run spec's micro_batch is "auto"
    tokens_per_step: float | None  # stand-in: fixed; pretrained: from the recipe, shrunk to fit the budget
    precision: str
    strategy: str
    activation_checkpointing: bool | str  # "auto": only when memory requires it (train/auto.py)
    checkpoints_per_run: int
    stream_of: Callable[[str], str]
    layout: Layout
    init_base: NewModel | Pretrained
    notes: list[str] = field(default_factory=list)
    layers: int | None = None  # decoder layers of the base, when known (depth up-scaling maps onto them)


# ---------------------------------------------------------------- entry points


def plan_request(
    request: PlanRequest,
    recipe: Recipe,
    registry: Registry,
    catalog: Catalog | None = None,
    root: Path | None = None,
    resolve: bool = True,
) -> Plan:
    """Plan a validated request. `resolve=False` lets `midtrain plan --scale full` print a plan from
    registry facts when the published base is not available here (noted)."""
    if request.scale not in registry.scales:
        raise MidtrainError.single(
            f"unknown scale {request.scale!r} (option --scale)",
            expected=", ".join(registry.scales),
            found=request.scale,
        )
    profile = registry.scales[request.scale]
    if request.base is None and profile.model == "stand-in":
        return _plan(recipe, registry, _stand_in_target(recipe, registry, request, profile), request)
    own = request.base or OwnBase(min_steps=1)
    return _plan(recipe, registry, _pretrained_target(recipe, registry, request, own, catalog, root, resolve), request)


def plan_recipe(recipe: Recipe, registry: Registry, scale: str, seed: int = 0) -> Plan:
    """A recipe at a scale profile, nothing else asked (used by tests and the catalogue checks)."""
    return plan_request(PlanRequest(recipe=recipe.id, scale=scale, seed=seed), recipe, registry, resolve=False)


# ---------------------------------------------------------------- targets


TRAINABLE_OPTIMIZERS = ("adamw", "adam", "muon", "ademamix")


def _trainable_optimizer(settings: Optimizer, notes: list[str]) -> dict[str, Any]:
    """The recipe's optimizer as the built-in trainer runs it; what it cannot run is named in the notes."""
    data = settings.model_dump(mode="json")

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)

    if data["type"] not in TRAINABLE_OPTIMIZERS:
        note(f"optimizer {data['type']} runs as AdamW (the built-in trainer implements AdamW, Adam, Muon and AdEMAMix)")
        data.update(type="adamw", ademamix=None, muon=None)
    if data.get("qk_clip"):
        note("QK-Clip is recorded but not applied by the built-in trainer (it needs each head's attention logits)")
        data["qk_clip"] = None
    if data.get("mup") or data.get("mup_width_ratio"):
        note("µP settings are recorded; the stand-in trains with the recipe's LRs scaled to its own peak, not µP")
    return data


def _stand_in_target(recipe: Recipe, registry: Registry, request: PlanRequest, profile: ScaleProfile) -> Target:
    notes: list[str] = []
    entry = registry.models[recipe.base.model]
    dims = profile.dims or entry.tiny
    family = FAMILY_ARCHITECTURES[recipe.family][1]
    if family != recipe.family.value:
        notes.append(
            f"family {recipe.family.value} ({recipe.architecture_class()}) runs as a {family} stand-in at this scale"
        )
    base_context, length_factor, note = rules.context_mapping(recipe, profile.base_context or 128, profile.max_context)
    notes += [note] if note else []
    theta = recipe.base.rope_theta or entry.rope_theta
    vocab = profile.vocab_size or 2048
    peak = profile.peak_lr or 3e-3
    lr_factor = peak / rules.recipe_reference_lr(recipe)
    base_end, _ = rules.base_end_lr(recipe, peak, lr_factor)
    if not recipe.base.peak_lr:
        notes.append(
            "the base's peak LR is not in the recipe: its LRs are scaled as if the base peaked at "
            + ("10× the LR where it left off" if recipe.base.lr_at_end else "the recipe's largest LR")
        )
    layout = Layout(data=request.scale, run=recipe.id)
    family, layer_fields = _stand_in_attention(recipe, family, dims.num_hidden_layers, base_context, notes)
    init = NewModel(
        family=family,
        dims=dims.model_dump(),
        vocab_size=vocab,
        rope_theta=theta,
        max_position_embeddings=base_context,
        **layer_fields,
    )
    return Target(
        kind="stand-in",
        family=family,
        base_context=base_context,
        length_factor=length_factor,
        theta=theta,
        theta_factor=1.0,
        vocab_size=vocab,
        peak_lr=peak,
        lr_factor=lr_factor,
        base_end=base_end,
        budget=profile.mid_training_tokens or 5e5,
        min_steps=profile.min_steps,
        max_runs=profile.max_runs,
        micro_tokens=profile.micro_batch_tokens or profile.tokens_per_step,
        tokens_per_step=profile.tokens_per_step or 2048,
        precision=profile.precision if profile.precision in ("auto", "fp32", "bf16") else "fp32",
        strategy="auto",
        activation_checkpointing="auto",
        checkpoints_per_run=4,
        stream_of=lambda source: f"{registry.sources[source].builtin.value}.train",
        layout=layout,
        init_base=init,
        notes=notes,
        layers=dims.num_hidden_layers,
    )


# Stand-in families whose transformers config has per-layer attention kinds (sliding windows), and the
# one that also has NoPE layers.
LAYERED_STAND_INS = ("qwen2", "qwen3", "olmo3", "smollm3")


def _stand_in_attention(
    recipe: Recipe, family: str, layers: int, base_context: int, notes: list[str]
) -> tuple[str, dict[str, Any]]:
    """The stand-in family and NewModel fields that carry the recipe's per-layer attention."""
    attention = recipe.attention
    if attention is None:
        return family, {}
    wanted = "smollm3" if "nope" in attention.pattern else family
    if wanted not in LAYERED_STAND_INS:
        wanted = "qwen2"
    if wanted != family:
        notes.append(f"attention: the stand-in is {wanted}, not {family}, so that it has per-layer attention kinds")
    factor = base_context / recipe.base.context_length
    return wanted, shapes.stand_in_layers(attention, layers, factor, wanted, notes)


def _registered_peak_lr(ref: str, recipe: Recipe, registry: Registry, catalog: Catalog | None) -> float | None:
    """A registered base may bring its peak LR: the recipe's own base, or a recipe whose base is it."""
    names = [name for name, entry in registry.models.items() if entry.hub_id == ref]
    if recipe.base.model in names and recipe.base.peak_lr:
        return recipe.base.peak_lr
    for other in catalog.recipes.values() if catalog is not None else []:
        if other.base.model in names and other.base.peak_lr:
            return float(other.base.peak_lr)
    return None


def _unresolved(ref: str, registry: Registry, recipe: Recipe) -> ResolvedBase:
    entry = registry.models[recipe.base.model]
    config = {
        "model_type": recipe.family.value,
        "max_position_embeddings": entry.context_length,
        "rope_theta": entry.rope_theta,
        "vocab_size": entry.vocab_size,
    }
    return ResolvedBase(ref, entry.revision, True, config, f"{ref}@{entry.revision or 'unresolved'}")


def _pretrained_target(
    recipe: Recipe,
    registry: Registry,
    request: PlanRequest,
    own: OwnBase,
    catalog: Catalog | None,
    root: Path | None,
    resolve: bool,
) -> Target:
    notes: list[str] = []
    base = _resolve_own_base(recipe, registry, own, root, resolve, notes)
    ref = base.ref
    config_context = base.context
    base_context = _own_base_context(recipe, own, base, notes)
    peak, lr_factor = _own_peak_lr(recipe, registry, own, ref, catalog)
    base_end, end_note = rules.base_end_lr(recipe, peak, lr_factor)
    notes += [end_note] if end_note else []
    budget = _own_budget(recipe, own, notes)
    layout, stream_of = _own_data_layout(recipe, registry, own, base.slug(), notes)
    return Target(
        kind="pretrained",
        family=base.model_type,
        base_context=base_context,
        length_factor=base_context / recipe.base.context_length,
        theta=base.rope_theta,
        theta_factor=base.rope_theta / (recipe.base.rope_theta or registry.models[recipe.base.model].rope_theta),
        vocab_size=base.vocab_size,
        peak_lr=peak,
        lr_factor=lr_factor,
        base_end=base_end,
        budget=budget,
        min_steps=own.min_steps,
        max_runs=None,
        micro_tokens=own.micro_batch_tokens,
        tokens_per_step=None,
        precision="auto",
        strategy="fsdp",
        activation_checkpointing="auto",
        checkpoints_per_run=4 if own.model else 20,
        stream_of=stream_of,
        layout=layout,
        init_base=Pretrained(path=ref, revision=base.revision),
        layers=base.config.get("num_hidden_layers") if isinstance(base.config.get("num_hidden_layers"), int) else None,
        notes=[
            *notes,
            f"base {ref}"
            + ((f"@{base.revision}" if base.revision else "") if base.is_hub else " (local directory)")
            + f": {base.model_type}, context {config_context:,}, RoPE θ {base.rope_theta:,.0f}, vocabulary {base.vocab_size:,}",
        ],
    )


def _resolve_own_base(
    recipe: Recipe, registry: Registry, own: OwnBase, root: Path | None, resolve: bool, notes: list[str]
) -> ResolvedBase:
    """The base to mid-train: `--base`, else the recipe's published base (its registry facts when it
    is not available here and `resolve` is off). It must have RoPE if the recipe changes RoPE."""
    entry = registry.models[recipe.base.model]
    ref = own.model or entry.hub_id
    if not ref and not resolve:
        ref = recipe.base.model
        notes.append(
            f"base model {ref} has no public hub id: pass your own with --base, or point registry/models at a copy"
        )
    if not ref:
        raise MidtrainError.single(
            f"the recipe's base {recipe.base.model} has no public hub id; pass your own with --base HUB_ID|DIR"
        )
    revision = own.revision or (None if own.model else (recipe.base.revision or entry.revision))
    try:
        base = resolve_base(ref, revision, root, cache_only=not resolve and not own.model)
    except MidtrainError:
        if resolve or own.model:
            raise
        base = _unresolved(ref, registry, recipe)
        notes.append(
            f"{ref} is not available here, so this plan uses the registry's facts about it; `midtrain reproduce` resolves it"
        )
    if own.requested_revision and base.revision and own.requested_revision != base.revision:
        notes.append(f"revision {own.requested_revision} of {ref} resolved to commit {base.revision}")
    uses_rope = any(stage.rope is not None for stage in recipe.stages)
    if uses_rope and not base.has_rope:
        raise MidtrainError.single(
            f"recipe {recipe.id} changes RoPE, but {ref} ({base.model_type}) has no rotary position embeddings (option --base)",
            expected="a base with rope_theta / rope_parameters in its config",
            found=base.model_type,
        )
    return base


def _own_base_context(recipe: Recipe, own: OwnBase, base: ResolvedBase, notes: list[str]) -> int:
    """The context to plan from: `--context` (never longer than the base's own), else the base's.
    An own base must be shorter than the recipe's target context when the recipe extends it."""
    config_context = base.context
    base_context = own.context or config_context
    if own.context and own.context > config_context:
        raise MidtrainError.single(
            f"--context {own.context} is longer than the base's own context",
            expected=f"≤ {config_context}",
            found=str(own.context),
        )
    if own.context and own.context < config_context:
        notes.append(f"planning from a {own.context}-token context (--context), not the base's {config_context}")
    ratio = recipe.longest_context() / recipe.base.context_length
    if ratio > 1 and own.model and base_context >= recipe.longest_context():
        raise MidtrainError.single(
            f"the base already handles {base_context:,} tokens, as long as or longer than the recipe's target context "
            f"{recipe.longest_context():,}; pass a shorter --context to plan the {ratio:g}× extension from it",
            expected=f"< {recipe.longest_context():,}",
            found=f"{base_context:,}",
        )
    return base_context


def _own_peak_lr(
    recipe: Recipe, registry: Registry, own: OwnBase, ref: str, catalog: Catalog | None
) -> tuple[float, float]:
    """The base's peak LR and the factor that maps the recipe's LRs onto it."""
    peak = own.peak_lr or _registered_peak_lr(ref, recipe, registry, catalog)
    if peak is None and not own.model:
        peak = rules.recipe_reference_lr(recipe)  # the published base: the recipe's LRs are its own
    if peak is None:
        raise MidtrainError.single(
            f"the peak LR of {ref}'s pre-training is unknown; pass --base-peak-lr (recipe LRs keep their ratio to it)",
            expected="e.g. --base-peak-lr 3e-4",
        )
    lr_factor = peak / rules.recipe_reference_lr(recipe)
    if not own.model and (recipe.base.peak_lr or not own.peak_lr):
        lr_factor = 1.0  # the published base: LRs as published
    return peak, lr_factor


def _own_budget(recipe: Recipe, own: OwnBase, notes: list[str]) -> float:
    """Mid-training tokens per run: `--tokens`, else the recipe's."""
    recipe_tokens = sum(s.total_tokens() or 0.0 for s in recipe.stages)
    budget = float(own.tokens or recipe_tokens)
    if budget <= 0:
        raise MidtrainError.single(f"recipe {recipe.id} states no token budget; pass --tokens")
    if own.tokens and own.tokens < recipe_tokens:
        notes.append(
            f"{budget:,.0f} mid-training tokens per run instead of the recipe's {recipe_tokens:,.0f} (--tokens)"
        )
    return budget


def _own_data_layout(
    recipe: Recipe, registry: Registry, own: OwnBase, slug: str, notes: list[str]
) -> tuple[Layout, Callable[[str], str]]:
    """Where data and runs go, and the stream each source is read from: the sources themselves, or
    their built-in stand-ins (`--stand-in-data`)."""
    if own.stand_in_data:
        notes.append(
            "data: each source's built-in stand-in corpus, tokenized with the base's tokenizer (--stand-in-data)"
        )
        return (
            Layout(data=f"standin-{slug}", run=f"{recipe.id}--{slug}"),
            lambda source: f"{registry.sources[source].builtin.value}.train",
        )
    for name in sorted({c.source for s in recipe.stages for c in s.mixture.components}):
        absolute = [f for f in registry.sources[name].files or [] if Path(f).is_absolute()]
        if absolute:
            notes.append(
                f"source {name} reads absolute paths outside the project, as its registry entry asks: {', '.join(absolute)}"
            )
    return Layout(data=f"{recipe.id}--{slug}", run=f"{recipe.id}--{slug}"), lambda source: f"{source}.train"


# ---------------------------------------------------------------- the stage loop


def _plan(recipe: Recipe, registry: Registry, target: Target, request: PlanRequest) -> Plan:
    notes = list(target.notes)
    shapes.refuse_unknown_budgets(recipe)
    shares = rules.stage_token_shares(recipe)
    max_context = max(rules.sequence_length(s.sequence_length, target.length_factor) for s in recipe.stages)
    max_context = max(max_context, target.base_context)
    stages: list[StagePlan] = []
    runs: dict[str, RunSpec] = {}
    run_stage: dict[str, tuple[str, int]] = {}
    merges: list[MergePlan] = []
    produced: dict[str, str] = {}
    previous, theta = "base", target.theta
    layers: dict[str, int | None] = {"base": target.layers}
    total_flops = 0.0
    for stage, share in zip(recipe.stages, shares):
        size = _stage_size(stage, share, target, notes)
        ramp, size.steps = shapes.batch_ramp(stage, size.global_batch, size.micro_batch, size.steps, notes)
        recipe_steps = stage.total_steps() or size.steps
        token_ratio = size.tokens / max(stage.total_tokens() or 1.0, 1.0)
        schedule = rules.scale_schedule(
            shapes.planned_schedule(recipe, stage, notes),
            target.lr_factor,
            recipe_steps,
            token_ratio,
            size.global_batch * size.sequence_length,
        )
        rope = rules.scale_rope(stage.rope, target.length_factor, target.theta_factor)
        if rope and rope.get("theta"):
            theta = rope["theta"]
        mixture, streams = _mixture(stage, target)
        names = _run_names(stage, target, notes)
        init = {"base": "base", "previous": previous}.get(stage.init, produced.get(stage.init, stage.init))
        if stage.init_at is not None:
            init = _branch_point(recipe, stage, stages, runs)
        depth = layers.get(init.split("@")[0])
        upscale, layers[stage.name] = None, depth
        if stage.upscale and depth:
            upscale, layers[stage.name] = shapes.upscale_segments(stage, depth, notes)
        elif stage.upscale:
            notes.append(
                f"stage {stage.name}: the depth of the model it starts from is unknown; up-scaling not planned"
            )
        extras = {
            "batch_ramp": ramp,
            "fim": shapes.fim_spec(stage, registry, target.stream_of, target.kind == "stand-in", notes),
            "streams_end": shapes.streams_end(stage, target.stream_of, streams),
            "upscale": upscale,
            "optimizer_from": _optimizer_from(stage, init, target, notes),
        }
        settings = _StageRuns(stage, size, schedule, rope, streams, max_context, extras)
        for index, name in enumerate(names):
            runs[name] = _run_spec(recipe, target, request, settings, name, index, notes)
            run_stage[name] = (stage.name, index)
        total_flops += 6 * size.tokens * len(names)
        stages.append(_stage_plan(settings, names, runs[names[0]].schedule, target, theta, mixture, init))
        produced[stage.name] = names[0]
        resolved = _resolve_merges(recipe, stage.name, run_stage, merges, produced)
        if not stage.branch:
            previous = resolved
        layers[names[0]] = layers[stage.name]
    final = recipe.final or recipe.final_name()
    final = produced.get(final, final)
    return _assemble(recipe, registry, target, request, stages, runs, merges, final, notes, total_flops, max_context)


@dataclass
class _StageSize:
    """One stage at the target: sequence length, batch and optimizer steps of each of its runs."""

    sequence_length: int
    global_batch: int
    micro_batch: int
    steps: int

    @property
    def tokens(self) -> int:
        return self.steps * self.global_batch * self.sequence_length


@dataclass
class _StageRuns:
    """What every run of one stage shares."""

    stage: Stage
    size: _StageSize
    schedule: dict[str, Any]
    rope: dict[str, Any] | None
    streams: dict[str, float]
    max_context: int
    extras: dict[str, Any] = field(default_factory=dict)  # batch ramp, FIM, mixture ramp, upscale, carry-over


def _branch_point(recipe: Recipe, stage: Stage, planned: list[StagePlan], runs: dict[str, RunSpec]) -> str:
    """`run@step`: the parent's first run keeps a snapshot at the branch point, the branch starts there."""
    parent_plan = next(p for p in planned if p.name == stage.init)
    run = parent_plan.runs[0]
    step = shapes.branch_step(stage, recipe.stage(stage.init), parent_plan.steps)
    if step >= parent_plan.steps:
        return run
    spec = runs[run]
    runs[run] = spec.model_copy(update={"save_at": sorted({*spec.save_at, step})})
    return f"{run}@{step}"


def _optimizer_from(stage: Stage, init: str, target: Target, notes: list[str]) -> str | None:
    """optimizer_state: carry → the run directory whose final optimizer state the stage continues."""
    if stage.optimizer_state != "carry":
        return None
    if stage.upscale is not None:
        notes.append(f"stage {stage.name}: up-scaling changes the parameters, so the optimizer starts fresh")
        return None
    if init == "base":
        if isinstance(target.init_base, NewModel):
            return target.layout.base_dir
        notes.append(f"stage {stage.name}: a given base has no optimizer state to carry over; it starts fresh")
        return None
    if "@" in init:
        notes.append(f"stage {stage.name}: a branch from the middle of a stage starts with a fresh optimizer")
        return None
    if init.startswith(("http", "/")):
        return None
    return target.layout.run_dir(init)


def _stage_size(stage: Stage, share: float, target: Target, notes: list[str]) -> _StageSize:
    """The stage's share of the budget as sequences, batches and steps (at least target.min_steps)."""
    seq = rules.sequence_length(stage.sequence_length, target.length_factor)
    stage_tokens = target.budget * share
    if target.tokens_per_step is not None:
        tokens_per_step = target.tokens_per_step
    else:
        recipe_tps = stage.tokens_per_step() or DEFAULT_TOKENS_PER_STEP
        if not stage.tokens_per_step():
            notes.append(f"{shapes.batch_note(stage)}; assuming {DEFAULT_TOKENS_PER_STEP:,} tokens per step")
        if stage_tokens < target.min_steps * seq:
            raise MidtrainError.single(
                f"stage {stage.name} gets {stage_tokens:,.0f} tokens, fewer than {target.min_steps} steps of one "
                f"{seq}-token sequence (option --tokens)",
                expected=f"--tokens ≥ {math.ceil(target.min_steps * seq / share):,}",
                found=f"{target.budget:,.0f}",
            )
        tokens_per_step = rules.tokens_per_step_for_budget(recipe_tps, stage_tokens, seq, target.min_steps)
        if tokens_per_step < recipe_tps:
            notes.append(
                f"stage {stage.name}: {tokens_per_step:,.0f} tokens per step instead of {recipe_tps:,.0f} so that the "
                f"budget gives at least {target.min_steps} steps"
            )
    global_batch, micro = rules.fit_batch(tokens_per_step, seq, target.micro_tokens or seq)
    steps = rules.steps_for(stage_tokens, global_batch, seq)
    if steps < target.min_steps:
        notes.append(
            f"stage {stage.name}: {steps} steps raised to the minimum of {target.min_steps} ({share:.2%} of the recipe's tokens)"
        )
        steps = target.min_steps
    return _StageSize(seq, global_batch, micro, steps)


def _run_names(stage: Stage, target: Target, notes: list[str]) -> list[str]:
    """The stage's runs (at most target.max_runs): the stage's name, or name-0, name-1, ..."""
    count = stage.runs.count
    if target.max_runs and count > target.max_runs:
        notes.append(f"stage {stage.name}: {count} runs cut to {target.max_runs}")
        count = target.max_runs
    return [stage.name] if count == 1 else [f"{stage.name}-{i}" for i in range(count)]


def _run_spec(
    recipe: Recipe,
    target: Target,
    request: PlanRequest,
    settings: _StageRuns,
    name: str,
    index: int,
    notes: list[str],
) -> RunSpec:
    """Run `index` of a stage; its init is filled in once every model's place is known (_assemble)."""
    stage, size, layout = settings.stage, settings.size, target.layout
    polyak = _averaging(recipe, stage.name, "polyak")
    ema = _averaging(recipe, stage.name, "ema")
    return RunSpec.model_validate(
        {
            "name": f"{recipe.id}/{name}",
            "out": layout.run_dir(name),
            "init": {"path": "pending"},
            "tokenizer": layout.tokenizer_dir,
            "data": layout.data_dir,
            "streams": settings.streams,
            "sequence_length": size.sequence_length,
            "global_batch": size.global_batch,
            "micro_batch": size.micro_batch if target.micro_tokens else "auto",
            "steps": size.steps,
            "schedule": settings.schedule,
            "optimizer": _trainable_optimizer(stage.optimizer or recipe.optimizer, notes),
            "seed": request.seed + index,
            "data_seed": request.seed * 1000 + (stage.runs.seeds[index] if stage.runs.seeds else index),
            "precision": target.precision,
            "checkpoint_every": max(size.steps // target.checkpoints_per_run, 1),
            "rope": settings.rope,
            "max_position_embeddings": settings.max_context,
            "z_loss": stage.z_loss,
            "base_lr": target.base_end if settings.schedule.get("type") == "from_base" else None,
            "polyak": {"checkpoints": min(polyak.checkpoints or 3, size.steps)} if polyak else None,
            "ema_decay": ema.ema_decay if ema else None,
            "strategy": target.strategy,
            "activation_checkpointing": target.activation_checkpointing,
            "max_epochs": {},
            "on_repeat": "warn",
            **{key: value for key, value in settings.extras.items() if value},
        }
    )


def _averaging(recipe: Recipe, stage: str, method: str) -> Merge | None:
    """The recipe's Polyak or EMA averaging of `stage`'s runs, if any."""
    return next((m for m in recipe.merges if m.method == method and any(i.stage == stage for i in m.inputs)), None)


def _stage_plan(
    settings: _StageRuns,
    names: list[str],
    schedule: Schedule,
    target: Target,
    theta: float,
    mixture: dict[str, dict[str, Any]],
    init: str,
) -> StagePlan:
    """The stage as the plan summary shows it; `schedule` is its runs' (scaled) schedule."""
    stage, size = settings.stage, settings.size
    return StagePlan(
        name=stage.name,
        kind=stage.kind.value,
        runs=names,
        tokens_per_run=size.tokens,
        steps=size.steps,
        sequence_length=size.sequence_length,
        global_batch=size.global_batch,
        micro_batch=size.micro_batch if target.micro_tokens else "auto",
        lr_start=rules.finite_or_none(_lr_after_warmup(schedule, size.steps, target.base_end)),
        lr_end=rules.finite_or_none(schedule.lr_at(size.steps - 1, size.steps, target.base_end)),
        schedule=schedule.describe(),
        rope=_describe_rope(settings.rope, theta),
        rope_theta=theta,
        mixture=mixture,
        streams=settings.streams,
        init=init,
        branch=stage.branch,
    )


def _describe_rope(rope: dict[str, Any] | None, theta: float) -> str:
    """The RoPE change as the run spec has it (scaled lengths, the target's θ), not as published."""
    if rope is None:
        return "unchanged"
    from midtrain.schema.rope import Rope

    return Rope.model_validate(rope).describe(theta)


def _lr_after_warmup(schedule: Schedule, steps: int, base_lr: float) -> float:
    from midtrain.schema.schedule import lr_after_warmup

    return lr_after_warmup(schedule, steps, base_lr)


def _mixture(stage: Stage, target: Target) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    streams: dict[str, float] = {}
    mixture: dict[str, dict[str, Any]] = {}
    for name, share in stage.mixture.shares().items():
        stream = target.stream_of(name)
        streams[stream] = streams.get(stream, 0.0) + share
        mixture[name] = {"share": share, "stream": stream}
    return mixture, streams


def _resolve_merges(
    recipe: Recipe, stage: str, run_stage: dict[str, tuple[str, int]], merges: list[MergePlan], produced: dict[str, str]
) -> str:
    """Plan the merges whose inputs are complete once `stage` has run (in recipe order); returns what
    "previous" means for the next stage: the stage's first run, or the merge that consumed it."""
    previous = produced[stage]
    for merge in recipe.merges:
        if merge.name in {m.name for m in merges}:
            continue
        consumed = [i.stage for i in merge.inputs]
        if stage in consumed and all(c in produced or c in {m.name for m in merges} for c in consumed):
            merges.append(_plan_merge(merge, run_stage, merges))
            produced[merge.name] = merge.name
            produced[stage] = merge.name
            previous = merge.name
    return previous


def _plan_merge(merge: Merge, run_stage: dict[str, tuple[str, int]], merges: list[MergePlan]) -> MergePlan:
    if merge.method in ("polyak", "ema"):
        run = next(name for name, (stage, _) in run_stage.items() if stage == merge.inputs[0].stage)
        return MergePlan(name=merge.name, method=merge.method, inputs=[run], source_of=run)
    inputs: list[str] = []
    weights: list[float] = []
    for item in merge.inputs:
        chosen = [
            name
            for name, (stage, index) in run_stage.items()
            if stage == item.stage and (item.run is None or index == item.run)
        ]
        if not chosen and item.stage in {m.name for m in merges}:
            chosen = [item.stage]
        inputs.extend(chosen)
        weights.extend([(item.weight or 1.0) / len(chosen)] * len(chosen))
    if merge.method == "uniform":
        return MergePlan(name=merge.name, method="uniform", inputs=inputs)
    total = sum(weights)
    return MergePlan(name=merge.name, method="weighted", inputs=inputs, weights=[w / total for w in weights])


# ---------------------------------------------------------------- assembling the typed plan


def _model_dir(name: str, layout: Layout, merges: list[MergePlan], base_ref: ModelUnderTest) -> ModelUnderTest:
    for merge in merges:
        if merge.name == name:
            if merge.source_of:
                return ModelUnderTest(path=layout.averaged_model(merge.source_of, merge.method))
            return ModelUnderTest(path=layout.merge_model(name))
    if name == "base":
        return base_ref
    return ModelUnderTest(path=layout.run_model(name))


def _order(stages: list[StagePlan], merges: list[MergePlan]) -> list[OrderItem]:
    """Runs and merges in execution order (merges right after the stage that completes their inputs)."""
    order: list[OrderItem] = []
    done: set[str] = set()
    for stage in stages:
        for run in stage.runs:
            order.append(OrderItem(kind="run", name=run))
            done.add(run)
        for merge in merges:
            if merge.name not in done and all(i in done for i in merge.inputs):
                order.append(OrderItem(kind="merge", name=merge.name))
                done.add(merge.name)
    return order


def _assemble(
    recipe: Recipe,
    registry: Registry,
    target: Target,
    request: PlanRequest,
    stages: list[StagePlan],
    runs: dict[str, RunSpec],
    merges: list[MergePlan],
    final: str,
    notes: list[str],
    flops: float,
    max_context: int,
) -> Plan:
    layout = target.layout
    profile = registry.scales.get(request.scale)
    base_ref, base_spec, summary_base, fingerprint = _base_side(recipe, target, request, profile)
    mid, final_ref = _mid_spec(recipe, layout, stages, runs, merges, final, base_ref, fingerprint)
    data = _data_spec(recipe, target, request)
    evaluation = _eval_spec(recipe, target, request, profile, base_ref, final_ref, max_context, notes)
    summary = PlanSummary(
        recipe=recipe.id,
        scale=request.scale if request.base is None else "own-base",
        layout=layout,
        model=_model_summary(recipe, target, max_context),
        objectives=[o.value for o in recipe.objectives],
        base=summary_base,
        stages=stages,
        merges=merges,
        final=final,
        notes=notes,
        evaluation={"kind": evaluation.kind, "lm_eval": evaluation.lm_eval.tasks if evaluation.lm_eval else []},
        compute=_compute(recipe, registry, target, request, stages) if target.kind == "pretrained" else None,
    )
    return Plan(summary=summary, data=data, base=base_spec, mid=mid, evaluation=evaluation)


def _base_side(
    recipe: Recipe, target: Target, request: PlanRequest, profile: ScaleProfile | None
) -> tuple[ModelUnderTest, PretrainBase | PretrainedBase, BaseSummary, str | None]:
    """The base: where its model is, how it is made (pretrained here, or taken as it is), its
    summary, and the fingerprint that makes DVC rerun when it changes (a given base only)."""
    layout = target.layout
    if isinstance(target.init_base, NewModel):
        base_run = _base_run(recipe, target, request, profile)
        summary = BaseSummary(
            kind="pretrain",
            model=f"{target.family} stand-in",
            context=target.base_context,
            rope_theta=target.theta,
            vocab_size=target.vocab_size,
            peak_lr=target.peak_lr,
            lr_end=target.base_end,
            steps=base_run.steps,
            tokens=base_run.steps * base_run.global_batch * base_run.sequence_length,
            mix=TINY_BASE_MIX,
            note="a stand-in base pretrained on a general-heavy built-in mix, ending at the "
            "LR where the recipe's base left off",
        )
        return ModelUnderTest(path=layout.base_model), PretrainBase(spec=base_run), summary, None
    ref = target.init_base
    fingerprint = (
        f"{ref.path}@{ref.revision}"
        if ref.revision
        else (request.base.fingerprint if request.base else None) or ref.path
    )
    summary = BaseSummary(
        kind="pretrained",
        model=ref.path,
        revision=ref.revision,
        context=target.base_context,
        rope_theta=target.theta,
        vocab_size=target.vocab_size,
        peak_lr=target.peak_lr,
        lr_end=target.base_end,
    )
    base_spec = PretrainedBase(model=ref, fingerprint=fingerprint, out=layout.base_dir)
    return ModelUnderTest(path=ref.path, revision=ref.revision), base_spec, summary, fingerprint


def _mid_spec(
    recipe: Recipe,
    layout: Layout,
    stages: list[StagePlan],
    runs: dict[str, RunSpec],
    merges: list[MergePlan],
    final: str,
    base_ref: ModelUnderTest,
    fingerprint: str | None,
) -> tuple[MidSpec, ModelUnderTest]:
    """Mid-training: every run starting from the model its stage names, the merges, and the final model."""
    for name, spec in runs.items():
        stage = next(s for s in stages if name in s.runs)
        if "@" in stage.init:
            run, step = stage.init.split("@")
            init = ModelUnderTest(path=f"{layout.run_dir(run)}/at-step-{step}/model")
        else:
            init = base_ref if stage.init == "base" else _model_dir(stage.init, layout, merges, base_ref)
        runs[name] = spec.model_copy(update={"init": Pretrained(path=init.path, revision=init.revision)})
    merge_specs = {
        m.name: MergeSpec(
            method=m.method,
            inputs=[_model_dir(i, layout, merges, base_ref).path for i in m.inputs],
            weights=m.weights,
            out=_model_dir(m.name, layout, merges, base_ref).path,
            source_of=m.source_of,
        )
        for m in merges
    }
    final_ref = _model_dir(final, layout, merges, base_ref)
    mid = MidSpec(
        recipe=recipe.id,
        order=_order(stages, merges),
        runs=runs,
        merges=merge_specs,
        final=final_ref.path,
        base_fingerprint=fingerprint,
    )
    return mid, final_ref


def _model_summary(recipe: Recipe, target: Target, max_context: int) -> dict[str, Any]:
    model: dict[str, Any] = {
        "family": target.family,
        "published_family": recipe.family.value,
        "base_context": target.base_context,
        "max_context": max_context,
        "rope_theta": target.theta,
        "vocab_size": target.vocab_size,
    }
    if isinstance(target.init_base, NewModel):
        model["dims"] = target.init_base.dims.model_dump()
    else:
        model.update(path=target.init_base.path, revision=target.init_base.revision)
    return model


def _base_run(recipe: Recipe, target: Target, request: PlanRequest, profile: ScaleProfile | None) -> RunSpec:
    tokens_per_step = int(target.tokens_per_step or 2048)
    steps = max(int(((profile.base_tokens if profile else None) or 1.5e6) // tokens_per_step), target.min_steps)
    global_batch, micro = rules.fit_batch(tokens_per_step, target.base_context, target.micro_tokens)
    return RunSpec.model_validate(
        {
            "name": f"{recipe.id}/base",
            "out": target.layout.base_dir,
            "init": target.init_base.model_dump(mode="json"),
            "tokenizer": target.layout.tokenizer_dir,
            "data": target.layout.data_dir,
            "streams": TINY_BASE_MIX,
            "sequence_length": target.base_context,
            "global_batch": global_batch,
            "micro_batch": micro,
            "steps": steps,
            "schedule": {
                "type": "cosine",
                "peak_lr": target.peak_lr,
                "min_lr": target.base_end,
                "warmup_fraction": 0.02,
            },
            "optimizer": _trainable_optimizer(recipe.optimizer, target.notes),
            "seed": request.seed,
            "data_seed": request.seed,
            "precision": target.precision,
            "activation_checkpointing": target.activation_checkpointing,
            "checkpoint_every": max(steps // 4, 1),
            "max_epochs": {},
            "on_repeat": "warn",
        }
    )


def _data_spec(recipe: Recipe, target: Target, request: PlanRequest) -> BuiltinData | StandInData | SourceData:
    layout = target.layout
    if isinstance(target.init_base, NewModel):
        return BuiltinData(out=layout.data_dir, vocab_size=target.vocab_size, seed=request.seed)
    tokenizer = Pretrained(path=target.init_base.path, revision=target.init_base.revision)
    if request.base is not None and request.base.stand_in_data:
        return StandInData(out=layout.data_dir, tokenizer=tokenizer, seed=request.seed)
    sources = sorted({c.source for s in recipe.stages for c in s.mixture.components})
    return SourceData(out=layout.data_dir, tokenizer=tokenizer, sources=sources, seed=request.seed)


def _local_tasks(target: Target, max_context: int, documents: int) -> dict[str, dict[str, Any]]:
    lengths = sorted({target.base_context, min(target.base_context * 2, max_context), max_context})
    tasks: dict[str, dict[str, Any]] = {LOCAL_MATH: {"kind": "math", "problems": documents}}
    for length in lengths:
        tasks[f"{LOCAL_RETRIEVAL}_{length}"] = {"kind": "retrieval", "length": length, "documents": documents}
    return tasks


def default_tasks(recipe: Recipe, stand_in_data: bool) -> list[str] | None:
    """lm-eval tasks for the recipe's objectives; None means the shipped local tasks (offline)."""
    if stand_in_data:
        return None
    tasks: list[str] = []
    for objective in recipe.objectives:
        for task in OBJECTIVE_TASKS.get(objective.value, []):
            if task not in tasks:
                tasks.append(task)
    return tasks or ["hellaswag", "arc_easy"]


def _eval_spec(
    recipe: Recipe,
    target: Target,
    request: PlanRequest,
    profile: ScaleProfile | None,
    base: ModelUnderTest,
    final: ModelUnderTest,
    max_context: int,
    notes: list[str],
) -> StandInEval | BenchmarkEval:
    sequences = (profile.eval_sequences if profile and request.base is None else None) or 64
    length = min(
        max(max_context, target.base_context * 4),
        (profile.max_context if profile and profile.max_context else max_context),
    )
    position = PositionEval(
        stream="longdoc.heldout", length=max(length, target.base_context + 1), base_context=target.base_context
    )
    common = {
        "base": base,
        "final": final,
        "data": target.layout.data_dir,
        "domains": DOMAINS,
        "sequence_length": target.base_context,
        "sequences": sequences,
        "position": position,
    }
    choice = request.eval
    local = _local_tasks(target, max_context, documents=min(sequences, 40))
    if isinstance(target.init_base, NewModel):
        lm_eval = None
        if choice.tasks:
            lm_eval = LmEvalSpec(
                tasks=choice.tasks,
                include_paths=choice.include,
                limit=choice.limit,
                local={k: v for k, v in local.items() if k in choice.tasks or LOCAL_RETRIEVAL in choice.tasks},
            )
        lengths = sorted({target.base_context, min(target.base_context * 2, length), length})
        return StandInEval(
            **common,
            math_problems=min(100, sequences),
            math_max_new_tokens=64,
            retrieval_lengths=lengths,
            retrieval_documents=max(4, sequences // 2),
            lm_eval=lm_eval,
        )
    stand_in = bool(request.base and request.base.stand_in_data)
    tasks = choice.tasks or default_tasks(recipe, stand_in) or list(local)
    if LOCAL_RETRIEVAL in tasks:
        tasks = [t for t in tasks if t != LOCAL_RETRIEVAL] + [t for t in local if t.startswith(LOCAL_RETRIEVAL)]
    lm_eval = LmEvalSpec(
        tasks=tasks,
        include_paths=choice.include,
        limit=choice.limit,
        local={name: settings for name, settings in local.items() if name in tasks},
    )
    external = [t for t in tasks if t not in lm_eval.local]
    if external:
        notes.append(
            f"decontamination covers the built-in held-out sets and the shipped local tasks; {', '.join(external)} "
            "are not indexed (to index them, prepare the data with `midtrain data prepare --eval-file TEST.jsonl`)"
        )
    return BenchmarkEval(**common, lm_eval=lm_eval)


def _compute(
    recipe: Recipe, registry: Registry, target: Target, request: PlanRequest, stages: list[StagePlan]
) -> dict[str, Any] | None:
    entry = registry.models[recipe.base.model]
    own = request.base and request.base.model and request.base.model != entry.hub_id
    if own:
        return None
    active = recipe.active_parameters or entry.active_parameters or recipe.parameters
    total = 0.0
    for stage in stages:
        tokens = stage.tokens_per_run * len(stage.runs)
        attention = (
            6 * entry.layers * entry.hidden_size * stage.sequence_length * tokens
            if entry.layers and entry.hidden_size
            else 0.0
        )
        total += 6 * active * tokens + attention
    hours = total / (H100_BF16_FLOPS * ASSUMED_MFU) / 3600
    return {
        "flops": total,
        "formula": "6·N_active·D per run"
        + (" + 6·L·d·S·D attention" if entry.layers else " (attention term needs layers/hidden_size in the registry)"),
        "active_parameters": active,
        "mfu_assumed": ASSUMED_MFU,
        "gpu_hours": {"H100": hours, "H200": hours},
        "note": "H100 and H200 share the same bf16 dense peak (989 TFLOP/s); the H200's larger, faster memory helps long contexts, not this estimate",
    }
