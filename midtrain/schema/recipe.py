"""The recipe: one published mid-training setup, with a citation for every number."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from midtrain.errors import LocatedErrors
from midtrain.schema.architecture import Attention
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

# Numbers that are identifiers or bookkeeping, not claims a paper makes (reported and revised values
# are cited inside their own entries).
UNCOUNTED_PREFIXES = ("schema_version", "source.year", "results", "reported", "revisions")


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


class ResultAt(Strict):
    """An intermediate checkpoint: part-way through a stage."""

    stage: str = Field(description="A stage of this recipe.")
    tokens: Count | None = Field(None, description="Tokens into the stage (one run).")
    fraction: float | None = Field(None, gt=0, le=1, description="Share of the stage done.")
    step: int | None = Field(None, ge=0)


class Result(Strict):
    benchmark: str
    at: ResultAt | None = Field(None, description="An intermediate checkpoint; absent: the model `model` names.")
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


class Reported(Strict):
    """A number as the paper prints it, kept beside the value the recipe uses when the paper is inconsistent
    (its "5B tokens, 4M batch, 100 steps" cannot all be true)."""

    path: str = Field(description="The field whose used value differs, e.g. stages[anneal].steps.")
    value: float | str = Field(description="What the paper prints.")
    cite: str = Field(description="Where it is printed.")
    why: str = Field(description="Why the recipe uses another value (the arithmetic that contradicts it).")


class Revision(Strict):
    """An erratum: a value corrected upstream (a config fix, a paper revision) after first publication."""

    path: str = Field(description="The field that was corrected.")
    old: float | str
    new: float | str
    where: str = Field(description="The fix: pull request, commit, paper version.")
    date: dt.date | None = None
    note: str | None = None


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
    attention: Attention | None = Field(None, description="Per-layer attention kinds (sliding, NoPE, Mamba ...).")
    stages: list[Stage] = Field(min_length=1)
    merges: list[Merge] = Field(default_factory=list)
    final: str | None = Field(None, description="The stage or merge that gives the released model; default: the last.")
    inference: Inference | None = Field(None, description="Serving-time context extension, not part of training.")
    results: list[Result] = Field(default_factory=list)
    provenance: dict[str, ProvenanceEntry] = Field(default_factory=dict)
    contradictions: list[Contradiction] = Field(default_factory=list)
    reported: list[Reported] = Field(
        default_factory=list,
        description="Numbers as printed where the paper is inconsistent; the fields hold the used ones.",
    )
    revisions: list[Revision] = Field(default_factory=list, description="Errata: values corrected upstream.")
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
        """Stage names and what each stage starts from, branch points, merges and the final model, and
        the field paths that provenance, contradictions, reported values, revisions and results name.
        One implementation on plain data (midtrain/schema/checks.py) serves this model and the one-pass
        validation of files that do not validate."""
        from midtrain.schema.checks import cross_problems

        data = self.model_dump(mode="json", exclude_none=True)
        aliases = path_aliases({k: v for k, v in data.items() if k not in ("provenance", "contradictions")})
        problems = cross_problems(data, aliases)
        if problems:
            raise LocatedErrors(problems)
        return self

    # ---- queries used by the CLI, the planner and the linter ----

    def architecture_class(self) -> str:
        return FAMILY_ARCHITECTURES[self.family][0]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def mid_training_tokens(self) -> float | None:
        """Tokens over the main line's mid-training stages and their runs: every stage kind but
        `pretraining` (see StageKind), side branches left out. 0 when every stage is pre-training; None
        when a counted stage's budget is unknown."""
        return _tokens(stage for stage in self.stages if stage.kind.is_mid_training and not stage.branch)

    def total_tokens(self) -> float | None:
        """Tokens over the main line's stages and runs, pre-training phases included, side branches not;
        None when a budget is unknown."""
        return _tokens(stage for stage in self.stages if not stage.branch)

    def branch_tokens(self) -> float | None:
        """Tokens over the side branches (0 without any)."""
        return _tokens(stage for stage in self.stages if stage.branch)

    def main_stages(self) -> list[Stage]:
        return [stage for stage in self.stages if not stage.branch]

    def init_of(self, index: int) -> str:
        """What stage `index` starts from, with `previous` resolved: the nearest earlier main-line stage
        (side branches are skipped) or 'base'."""
        init = self.stages[index].init
        if init != "previous":
            return init
        for stage in reversed(self.stages[:index]):
            if not stage.branch:
                return stage.name
        return "base"

    def final_name(self) -> str:
        """The stage or merge that gives the released model: `final`, else the last main-line stage."""
        if self.final is not None:
            return self.final
        main = self.main_stages()
        return (main or self.stages)[-1].name

    def unknowns(self) -> list[str]:
        """Paths of the values written as `unknown`."""
        return [f"stages[{stage.name}].{name}" for stage in self.stages for name in stage.unknowns()]

    def longest_context(self) -> int:
        """The longest context of any stage, side branches included (what a plan must fit)."""
        return max(stage.sequence_length for stage in self.stages)

    def final_context(self) -> int:
        """The longest context on the main line (side branches left out, like the token totals)."""
        return max(stage.sequence_length for stage in (self.main_stages() or self.stages))

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
