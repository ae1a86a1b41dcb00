"""The microanneal plan: the base and data (from the regular planner), one run per arm × seed, and
how each unit is scored.

Files (all under microanneal/, the pipeline's working directory):

    plan/design.json   arms with their exact source and stream mixtures, units, budget, notes
    plan/data.json     the data spec (built-in corpora, own BPE or the base's tokenizer) + extra streams
    plan/base.json     the stand-in base to pretrain, or the pretrained base to fetch
    plan/score.json    held-out domains, the answer-token loss and lm-eval tasks
    plan/template.json the final anneal's RunSpec starting from the base, which every unit's spec copies
    unit-specs/<u>.json (the `units` stage, after data and base) a unit's RunSpec plus the identity of
                       every stream it reads and of its base, so a unit reruns exactly when they change
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from midtrain.errors import MidtrainError
from midtrain.microanneal.design import MIN_STEPS, Design, MicroRequest, expand, final_anneal, split_unit
from midtrain.plan.contract import DataSpec, LmEvalSpec, Pretrained, PretrainedBase
from midtrain.schema.base import Strict
from midtrain.train.config import RunSpec

if TYPE_CHECKING:
    from midtrain.catalog import Catalog
    from midtrain.plan.contract import Plan

ANSWER_PROBLEMS = 200  # held-out math problems scored on their final-answer tokens


class ArmPlan(Strict):
    sources: dict[str, float]
    streams: dict[str, float]


class DesignPlan(Strict):
    """plan/design.json: what the report prints as the exact experiment."""

    form: str
    recipe: str
    base: str
    swap: dict[str, str] = Field(default_factory=dict)
    share: float
    tokens_per_unit: int
    seeds: int
    steps: int
    global_batch: int
    micro_batch: int | Literal["auto"]
    sequence_length: int
    schedule: str
    linear_start: float | None = Field(None, description="Start LR of the linear decay (mixture form).")
    arms: dict[str, ArmPlan]
    units: list[str]
    domains: list[str]
    tasks: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class ExtraData(Strict):
    """Streams beyond the plan's data: the degraded math candidate and registry sources."""

    noisy: bool = False
    sources: list[str] = Field(default_factory=list)


class MicroData(Strict):
    spec: DataSpec
    extra: ExtraData


class ScoreSpec(Strict):
    data: str
    domains: dict[str, str]
    sequence_length: int = Field(gt=0)
    sequences: int = Field(gt=0)
    answer_problems: int = Field(gt=0)
    lm_eval: LmEvalSpec | None = None


class UnitTemplate(Strict):
    """Everything a unit's RunSpec needs except its streams, seed and output."""

    spec: RunSpec
    base_fingerprint: str | None = None


def base_request(request: MicroRequest) -> Any:
    """The regular planner's request for the same base, data and evaluation tasks."""
    from midtrain.plan.request import EvalChoice, PlanRequest

    base = request.base
    if base is not None and base.model is not None:
        base = base.model_copy(update={"stand_in_data": True, "tokens": base.tokens or request.tokens})
    return PlanRequest(
        recipe=request.recipe,
        scale="tiny",
        seed=request.seed,
        base=base,
        eval=EvalChoice(tasks=request.eval.tasks or None, include=request.eval.include, limit=request.eval.limit),
    )


def _batch(template: RunSpec, tokens: int) -> tuple[int, int, int | Literal["auto"], list[str]]:
    """(steps, global batch, micro-batch, notes) for `tokens` per unit at the template's length."""
    sequence = template.sequence_length
    need = MIN_STEPS * sequence
    if tokens < need:
        raise MidtrainError.single(
            f"{tokens:,} tokens per arm is too few for {MIN_STEPS} optimizer steps of one {sequence}-token sequence "
            "(option --tokens)",
            expected=f"at least {need:,}",
            found=f"{tokens:,}",
        )
    global_batch, notes = template.global_batch, []
    if tokens // (global_batch * sequence) < MIN_STEPS:
        global_batch = max(1, tokens // (MIN_STEPS * sequence))
        notes.append(f"batch {template.global_batch} → {global_batch} sequences so each unit runs ≥ {MIN_STEPS} steps")
    micro: int | Literal["auto"] = (
        "auto" if template.micro_batch == "auto" else math.gcd(global_batch, template.micro_batch)
    )
    steps = max(round(tokens / (global_batch * sequence)), MIN_STEPS)
    return steps, global_batch, micro, notes


def unit_spec(template: UnitTemplate, summary: DesignPlan, unit: str) -> RunSpec:
    """The RunSpec of one arm × seed: the template's model, length and optimizer; the arm's streams;
    the seed's data order; linear decay to 0 (or, in the recipe form, the recipe's own schedule)."""
    arm, seed = split_unit(unit)
    data = template.spec.model_dump(mode="json")
    data.update(
        name=f"microanneal/{unit}",
        out=f"units/{unit}",
        streams=summary.arms[arm].streams,
        steps=summary.steps,
        global_batch=summary.global_batch,
        micro_batch=summary.micro_batch,
        data_seed=seed,
        checkpoint_every=max(summary.steps // 4, 1),
        ema_decay=None,
        polyak=None,
        max_epochs={},
        on_repeat="warn",
    )
    if summary.linear_start is not None:
        data.update(
            schedule={"type": "linear", "start_lr": summary.linear_start, "end_lr": 0.0}, base_lr=None, rope=None
        )
    return RunSpec.model_validate(data)


def _template(plan: Plan) -> RunSpec:
    """The first run of the plan's final annealing stage: model, length, batch, optimizer, schedule."""
    stage_names = [s.name for s in plan.summary.stages]
    if not stage_names:
        raise MidtrainError.single(f"recipe {plan.summary.recipe} has no mid-training stage to anneal with")
    return plan.mid.runs[plan.summary.stages[-1].runs[0]]


def plan_design(
    request: MicroRequest, catalog: Catalog, project: Path, resolve: bool
) -> tuple[Design, Plan, DesignPlan]:
    """Check the request, plan its base and data, and describe the experiment."""
    from midtrain.plan.planner import plan_request

    design = expand(request, catalog)
    recipe = catalog.get(request.recipe)
    plan = plan_request(base_request(request), recipe, catalog.registry, catalog=catalog, root=project, resolve=resolve)
    template = _template(plan)
    if design.recipe_form:
        stage = final_anneal(recipe)
        if stage.name != plan.summary.stages[-1].name:
            raise MidtrainError.single(
                f"{recipe.id}: the final annealing stage {stage.name!r} is not the plan's last stage", file=None
            )
    steps, global_batch, micro, notes = _batch(template, int(request.tokens))
    start = None if design.recipe_form else (request.lr or plan.summary.base.lr_end)
    if start is not None and start <= 0:
        raise MidtrainError.single(
            "the base's final LR is 0, so a decay from it would not train; give a start LR (option --lr)"
        )
    schedule = template.schedule.describe() if design.recipe_form else f"linear {start:.3g} → 0"
    if start is not None and request.lr is None:
        notes.append(f"linear decay from the base's final LR {start:.3g} to 0 (option --lr overrides)")
    summary = DesignPlan(
        form="recipe" if design.recipe_form else "mixture",
        recipe=request.recipe,
        base=plan.summary.base.model + (f"@{plan.summary.base.revision}" if plan.summary.base.revision else ""),
        swap=request.swap,
        share=request.share,
        tokens_per_unit=steps * global_batch * template.sequence_length,
        seeds=request.seeds,
        steps=steps,
        global_batch=global_batch,
        micro_batch=micro,
        sequence_length=template.sequence_length,
        schedule=schedule,
        linear_start=start,
        arms={name: ArmPlan(sources=arm.sources, streams=arm.streams) for name, arm in design.arms.items()},
        units=design.units(),
        domains=design.domains,
        tasks=request.eval.tasks,
        notes=notes + _stand_in_notes(design, catalog),
    )
    return design, plan, summary


def _stand_in_notes(design: Design, catalog: Catalog) -> list[str]:
    if not design.recipe_form:
        return []
    registry = catalog.registry
    pairs = ", ".join(f"{s} → {registry.sources[s].builtin.value}" for s in sorted(design.arms["control"].sources))
    return [f"the recipe's sources (where not swapped) are built-in stand-ins: {pairs}"]


def write_design(here: Path, project: Path, request: MicroRequest, catalog: Catalog) -> DesignPlan:
    """The plan stage: plan/ (design, data, base, score, unit template)."""
    from midtrain.io import write_json

    design, plan, summary = plan_design(request, catalog, project, resolve=True)
    if request.units != design.units():
        raise MidtrainError.single(
            "`units` does not list every arm × seed; rerun `midtrain microanneal` (which writes both)",
            file=here / "params.yaml",
            expected=", ".join(design.units()),
            found=", ".join(request.units) or "nothing",
        )
    out = here / "plan"
    template = _template(plan)
    if isinstance(plan.base, PretrainedBase):
        base_model = plan.base.model
        fingerprint: str | None = plan.base.fingerprint
    else:
        base_model = Pretrained(path=plan.summary.layout.base_model)
        fingerprint = None
    unit_template = UnitTemplate(spec=template.model_copy(update={"init": base_model}), base_fingerprint=fingerprint)
    evaluation = plan.evaluation
    score = ScoreSpec(
        data=plan.summary.layout.data_dir,
        domains={d: f"{d}.heldout" for d in design.domains},
        sequence_length=template.sequence_length,
        sequences=evaluation.sequences,
        answer_problems=ANSWER_PROBLEMS,
        lm_eval=evaluation.lm_eval,
    )
    files: dict[str, Any] = {
        "design": summary,
        "data": MicroData(spec=plan.data, extra=ExtraData(noisy=design.noisy, sources=design.registry_sources)),
        "base": plan.base,
        "score": score,
        "template": unit_template,
    }
    for name, model in files.items():
        write_json(out / f"{name}.json", model.model_dump(mode="json"))
    return summary


def read_model(path: Path, kind: Any) -> Any:
    """A plan file of this pipeline, validated like the reproduction's (located errors)."""
    from midtrain.plan.contract import _validate

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MidtrainError.single("plan file not found; run the plan stage first", file=path) from None
    except json.JSONDecodeError as exc:
        raise MidtrainError.single(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    return _validate(kind, data, path)
