"""The recipe: one published mid-training setup, with a citation for every number."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from midtrain.errors import FieldProblem, LocatedErrors
from midtrain.schema.base import (
    FAMILY_ARCHITECTURES,
    SCHEMA_VERSION,
    Capability,
    Count,
    Family,
    LearningRate,
    Slug,
    Strict,
    Technique,
)
from midtrain.schema.provenance import Contradiction, Entry, ProvenanceEntry, path_aliases
from midtrain.schema.rope import Rope
from midtrain.schema.stage import Optimizer, Stage

# Numbers that are identifiers or bookkeeping, not claims a paper makes.
UNCOUNTED_PREFIXES = ("schema_version", "source.year", "results")


class Reference(Strict):
    title: str
    url: str | None = None
    kind: Literal["paper", "config", "code", "blog", "model-card", "dataset-card", "other"] = "other"


class Source(Strict):
    title: str
    arxiv: str | None = Field(None, pattern=r"^\d{4}\.\d{4,5}(v\d+)?$")
    url: str | None = None
    year: int = Field(ge=2015, le=2100)
    references: list[Reference] = Field(default_factory=list)


class Base(Strict):
    """The checkpoint mid-training starts from."""

    model: str = Field(description="Name of a base model in registry/models.yaml.")
    checkpoint: str | None = Field(None, description="Checkpoint name or hub revision of the starting point.")
    revision: str | None = None
    tokens_seen: Count | None = Field(None, description="Pre-training tokens behind the starting checkpoint.")
    context_length: int = Field(gt=0, le=16 * 1024 * 1024)
    rope_theta: float | None = Field(None, gt=0)
    inherits_optimizer_state: bool | None = Field(
        None, description="True: continue the optimizer/LR state (mid-training)."
    )
    peak_lr: LearningRate | None = Field(None, description="Peak LR of the pre-training schedule.")
    lr_at_end: LearningRate | None = Field(
        None, description="LR where pre-training left off; what `from_base` starts at."
    )
    schedule_before: str | None = Field(None, description="The pre-training schedule, in words.")


class MergeInput(Strict):
    stage: str = Field(description="A stage (all of its runs) or a merge named earlier.")
    run: int | None = Field(None, ge=0, description="One run of the stage; all runs if absent.")
    weight: float | None = Field(None, gt=0)


class Merge(Strict):
    """Averaging weights: soups of runs, linear merges of named models, Polyak/EMA during a stage."""

    name: Slug
    method: Literal["uniform", "weighted", "polyak", "ema"]
    inputs: list[MergeInput] = Field(default_factory=list)
    checkpoints: int | None = Field(None, ge=2, description="Polyak: how many checkpoints of a stage are averaged.")
    ema_decay: float | None = Field(None, gt=0, lt=1)
    interval_steps: int | None = Field(None, gt=0, description="Polyak/EMA: steps between averaged checkpoints.")
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Merge:
        if self.method in ("uniform", "weighted", "polyak") and not self.inputs:
            raise ValueError(f"a {self.method} merge needs inputs")
        if self.method == "weighted":
            weights = [i.weight for i in self.inputs if i.weight is not None]
            if len(weights) < len(self.inputs):
                raise ValueError("a weighted merge needs a weight on every input")
            if abs(sum(weights) - 1.0) > 1e-6:
                raise ValueError(f"merge weights must sum to 1, found {sum(weights):.6g}")
        if self.method == "uniform" and any(i.weight is not None for i in self.inputs):
            raise ValueError("a uniform merge takes no weights; use method: weighted")
        if self.method == "ema" and self.ema_decay is None:
            raise ValueError("an EMA merge needs ema_decay")
        return self


class Inference(Strict):
    """Context settings used only when serving (e.g. Qwen3's YaRN ×4 at inference); never trained."""

    context_length: int = Field(gt=0)
    rope: Rope | None = None
    note: str | None = None


class Result(Strict):
    benchmark: str
    before: float | None = None
    after: float | None = None
    delta: float | None = Field(None, description="Reported change, when the paper gives only the difference.")
    delta_kind: Literal["absolute", "relative", "unknown"] | None = None
    metric: str | None = None
    model: str | None = Field(None, description="Which model/variant the numbers are for.")
    where: str = Field(description="Table or section the numbers come from.")
    note: str | None = None

    @model_validator(mode="after")
    def _some_number(self) -> Result:
        if self.after is None and self.delta is None:
            raise ValueError("give `after` (and `before`), or `delta` when only the change is reported")
        if self.delta is not None and self.delta_kind is None:
            raise ValueError("say whether the delta is absolute, relative or unknown (delta_kind)")
        return self


class Recipe(Strict):
    schema_version: int = Field(SCHEMA_VERSION, description="Version of the recipe format; see `midtrain schema`.")
    id: Slug
    title: str
    organization: str
    release_date: dt.date | None = None
    family: Family
    parameters: Count
    active_parameters: Count | None = None
    architecture: str = Field(description="One line: layers, attention, MoE, vocabulary ...")
    source: Source
    base: Base
    objectives: list[Capability] = Field(min_length=1)
    techniques: list[Technique] = Field(default_factory=list)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    stages: list[Stage] = Field(min_length=1)
    merges: list[Merge] = Field(default_factory=list)
    final: str | None = Field(None, description="The stage or merge that gives the released model; default: the last.")
    inference: Inference | None = Field(None, description="Serving-time context extension, not part of training.")
    results: list[Result] = Field(default_factory=list)
    provenance: dict[str, ProvenanceEntry] = Field(default_factory=dict)
    contradictions: list[Contradiction] = Field(default_factory=list)
    notes: str | None = None

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"this midtrain reads schema_version {SCHEMA_VERSION}; run `midtrain validate --migrate` "
                f"to upgrade older files (found {value})"
            )
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        problems = self._stage_problems() + self._merge_problems() + self._path_problems()
        if problems:
            raise LocatedErrors(problems)
        return self

    def _stage_problems(self) -> list[FieldProblem]:
        """Stage names, what each stage starts from, and what its schedule and RoPE need from the base."""
        problems: list[FieldProblem] = []
        names: set[str] = set()
        merge_names = {m.name for m in self.merges}  # built once: per stage it made the check quadratic
        for index, stage in enumerate(self.stages):
            if stage.name in names:
                problems.append((("stages", index, "name"), f"stage name {stage.name!r} is used twice"))
            if stage.init not in ("base", "previous") and stage.init not in names and stage.init not in merge_names:
                problems.append(
                    (
                        ("stages", index, "init"),
                        f"{stage.init!r} is not an earlier stage, a merge, 'base' or 'previous'",
                    )
                )
            if stage.schedule.type == "from_base" and self.base.lr_at_end is None:
                problems.append((("stages", index, "schedule"), "a from_base schedule needs base.lr_at_end"))
            if stage.rope is not None:
                capacity = stage.rope.capacity(self.base.context_length)
                if capacity is not None and stage.sequence_length > capacity:
                    problems.append(
                        (
                            ("stages", index, "rope"),
                            f"sequence_length {stage.sequence_length:,} exceeds what the "
                            f"scaling covers ({capacity:,} = base context × factor)",
                        )
                    )
            names.add(stage.name)
        return problems

    def _merge_problems(self) -> list[FieldProblem]:
        """Merge names, their inputs (stages, runs and earlier merges) and the final model."""
        problems: list[FieldProblem] = []
        stages_by_name: dict[str, Stage] = {}
        for stage in self.stages:
            stages_by_name.setdefault(stage.name, stage)
        known = set(stages_by_name)
        for index, merge in enumerate(self.merges):
            if merge.name in known:
                problems.append((("merges", index, "name"), f"name {merge.name!r} is already used by a stage or merge"))
            for j, item in enumerate(merge.inputs):
                if item.stage not in known:
                    problems.append(
                        (("merges", index, "inputs", j, "stage"), f"{item.stage!r} is not a stage or earlier merge")
                    )
                    continue
                source = stages_by_name.get(item.stage)
                if source is not None and item.run is not None and item.run >= source.runs.count:
                    problems.append(
                        (
                            ("merges", index, "inputs", j, "run"),
                            f"run {item.run} but {item.stage!r} has {source.runs.count} runs",
                        )
                    )
            known.add(merge.name)
        if self.final is not None and self.final not in known:
            problems.append((("final",), f"{self.final!r} is not a stage or merge"))
        return problems

    def _path_problems(self) -> list[FieldProblem]:
        """Provenance entries and contradictions must name fields that exist."""
        problems: list[FieldProblem] = []
        aliases = path_aliases(
            self.model_dump(mode="json", exclude={"provenance", "contradictions"}, exclude_none=True)
        )
        for path in self.provenance:
            if path not in aliases:
                problems.append(
                    (("provenance", path), f"{path!r} is not a field of this recipe (check the stage/source names)")
                )
        for index, contradiction in enumerate(self.contradictions):
            for path in contradiction.about:
                if path not in aliases:
                    problems.append((("contradictions", index, "about"), f"{path!r} is not a field of this recipe"))
        return problems

    # ---- queries used by the CLI, the planner and the linter ----

    def architecture_class(self) -> str:
        return FAMILY_ARCHITECTURES[self.family][0]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def mid_training_tokens(self) -> float | None:
        """Tokens over the mid-training stages and their runs: every stage kind but `pretraining`
        (see StageKind). 0 when every stage is pre-training; None when a counted stage's budget is unknown."""
        return _tokens(stage for stage in self.stages if stage.kind.is_mid_training)

    def total_tokens(self) -> float | None:
        """Tokens over all stages and runs, pre-training phases included; None when a budget is unknown."""
        return _tokens(self.stages)

    def final_context(self) -> int:
        return max(stage.sequence_length for stage in self.stages)

    def canonical_provenance(self) -> dict[str, Entry]:
        aliases = path_aliases(
            self.model_dump(mode="json", exclude={"provenance", "contradictions"}, exclude_none=True)
        )
        return {aliases.get(path, path): entry for path, entry in self.provenance.items()}


def _tokens(stages: Iterable[Stage]) -> float | None:
    total = 0.0
    for stage in stages:
        tokens = stage.total_tokens()
        if tokens is None:
            return None
        total += tokens * stage.runs.count
    return total
