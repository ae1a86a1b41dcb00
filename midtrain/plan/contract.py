"""The typed plan contract: what the `plan` stage writes and every later stage reads.

Each file under `plan/` is one Pydantic model, validated when it is written and again when a stage
reads it, so a stage never works from a half-understood dictionary:

    plan.json      PlanSummary   what `midtrain plan` prints: model, stages, merges, notes, compute
    data.json      DataSpec      built-in corpora (own BPE), stand-in corpora (base tokenizer), or sources
    base.json      BaseSpec      pretrain a stand-in, or resolve a pretrained base (hub id@commit or directory)
    midtrain.json  MidSpec       every run (a RunSpec) and merge, in execution order
    eval.json      EvalSpec      the stand-in evaluation, or held-out loss plus benchmarks (lm-eval)

Every path in them comes from one `Layout`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, overload

from pydantic import BaseModel, Field, ValidationError

from midtrain.errors import MidtrainError
from midtrain.schema.base import Strict
from midtrain.train.config import Pretrained as Pretrained  # re-exported: plans name models with it
from midtrain.train.config import RunSpec as RunSpec  # re-exported: a plan's runs are run specs

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


class Layout(Strict):
    """Every path of a reproduction, relative to the project root. dvc.yaml uses the same names
    through `${layout.data}` and `${layout.run}` (params.yaml); a test checks that they agree."""

    data: str = Field(
        pattern=KEY.pattern, description="Data key: data/<data>/ (shared by plans with the same data and tokenizer)."
    )
    run: str = Field(pattern=KEY.pattern, description="Run key: runs/<run>/ (one per recipe and base).")

    @property
    def plan_dir(self) -> str:
        return "plan"

    @property
    def data_dir(self) -> str:
        return f"data/{self.data}"

    @property
    def tokenizer_dir(self) -> str:
        return f"{self.data_dir}/tokenizer"

    @property
    def base_dir(self) -> str:
        return f"runs/{self.run}/base"

    @property
    def base_model(self) -> str:
        return f"{self.base_dir}/model"

    @property
    def mid_dir(self) -> str:
        return f"runs/{self.run}/mid"

    @property
    def specs_dir(self) -> str:
        return f"{self.mid_dir}/.specs"

    def run_dir(self, name: str) -> str:
        return f"{self.mid_dir}/{name}"

    def run_model(self, name: str) -> str:
        return f"{self.mid_dir}/{name}/model"

    def averaged_model(self, run: str, method: str) -> str:
        return f"{self.mid_dir}/{run}/model-{method}"

    def merge_model(self, name: str) -> str:
        return f"{self.mid_dir}/{name}"

    @property
    def metrics(self) -> str:
        return "metrics/eval.json"

    @property
    def position_curve(self) -> str:
        return "metrics/position_curve.json"

    @property
    def report_dir(self) -> str:
        return "report"

    def plan_file(self, name: str) -> str:
        return f"{self.plan_dir}/{name}.json"


# ---------------------------------------------------------------- data


class BuiltinData(Strict):
    """Tiny/small: built-in corpora and a byte-level BPE trained on them."""

    kind: Literal["builtin"] = "builtin"
    out: str
    vocab_size: int = Field(gt=255, le=1_000_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class StandInData(Strict):
    """Own base, offline: the built-in corpora tokenized with the base's own tokenizer."""

    kind: Literal["stand_in"] = "stand_in"
    out: str
    tokenizer: Pretrained
    seed: int = Field(0, ge=0, le=2**31 - 1)


class SourceData(Strict):
    """Own or published base: the recipe's registry sources (hub datasets or files), the base's
    tokenizer; the built-in held-out sets are added for per-domain held-out loss."""

    kind: Literal["sources"] = "sources"
    out: str
    tokenizer: Pretrained
    sources: list[str] = Field(min_length=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)


DataSpec = Annotated[BuiltinData | StandInData | SourceData, Field(discriminator="kind")]


# ---------------------------------------------------------------- base


class PretrainBase(Strict):
    """A stand-in base pretrained here from scratch (tiny/small scales)."""

    kind: Literal["pretrain"] = "pretrain"
    spec: RunSpec


class PretrainedBase(Strict):
    """A base that exists: a hub id at a resolved commit, or a local directory."""

    kind: Literal["pretrained"] = "pretrained"
    model: Pretrained
    fingerprint: str = Field(description="hub id@commit, or a digest of the directory's files")
    out: str = Field(description="Directory where the base stage records what it resolved.")


BaseSpec = Annotated[PretrainBase | PretrainedBase, Field(discriminator="kind")]


# ---------------------------------------------------------------- mid-training


class MergeSpec(Strict):
    method: Literal["uniform", "weighted", "polyak", "ema"]
    inputs: list[str] = Field(min_length=1, description="Model directories (relative to the project root).")
    weights: list[float] | None = None
    out: str
    source_of: str | None = Field(None, description="polyak/ema: the run whose averaged model this is.")


class OrderItem(Strict):
    kind: Literal["run", "merge"]
    name: str


class MidSpec(Strict):
    recipe: str
    order: list[OrderItem]
    runs: dict[str, RunSpec]
    merges: dict[str, MergeSpec]
    final: str
    base_fingerprint: str | None = Field(
        None, description="Identity of a pretrained base (runs starting from it are keyed on it)."
    )


# ---------------------------------------------------------------- evaluation


class ModelUnderTest(Strict):
    path: str
    revision: str | None = None


class LmEvalSpec(Strict):
    tasks: list[str] = Field(min_length=1)
    include_paths: list[str] = Field(default_factory=list, description="Directories with local task YAML files.")
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    num_fewshot: int | None = Field(None, ge=0)
    local: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Shipped local tasks: name -> their settings."
    )


class PositionEval(Strict):
    stream: str
    length: int = Field(gt=1)
    base_context: int = Field(gt=0)


class StandInEval(Strict):
    """The stand-in evaluation: held-out loss per domain, loss by position, math exact match,
    planted-fact retrieval; lm-eval on the shipped local tasks when asked."""

    kind: Literal["stand_in"] = "stand_in"
    base: ModelUnderTest
    final: ModelUnderTest
    data: str
    domains: dict[str, str]
    sequence_length: int = Field(gt=0)
    sequences: int = Field(gt=0)
    position: PositionEval
    math_problems: int = Field(gt=0)
    math_max_new_tokens: int = Field(gt=0)
    retrieval_lengths: list[int]
    retrieval_documents: int = Field(gt=0)
    lm_eval: LmEvalSpec | None = None


class BenchmarkEval(Strict):
    """Own or published bases: held-out loss per built-in domain (tokenized with the base's
    tokenizer), loss by position, and lm-evaluation-harness benchmarks."""

    kind: Literal["benchmark"] = "benchmark"
    base: ModelUnderTest
    final: ModelUnderTest
    data: str
    domains: dict[str, str]
    sequence_length: int = Field(gt=0)
    sequences: int = Field(gt=0)
    position: PositionEval | None = None
    lm_eval: LmEvalSpec


EvalSpec = Annotated[StandInEval | BenchmarkEval, Field(discriminator="kind")]


# ---------------------------------------------------------------- the printed plan


class StagePlan(Strict):
    name: str
    kind: str
    runs: list[str]
    tokens_per_run: int
    steps: int
    sequence_length: int
    global_batch: int
    micro_batch: int | Literal["auto"]
    lr_start: float | None
    lr_end: float | None
    schedule: str
    rope: str
    rope_theta: float | None = None
    mixture: dict[str, dict[str, Any]]
    streams: dict[str, float]
    init: str
    branch: bool = False


class MergePlan(Strict):
    name: str
    method: str
    inputs: list[str]
    weights: list[float] | None = None
    source_of: str | None = None


class BaseSummary(Strict):
    kind: Literal["pretrain", "pretrained"]
    model: str = Field(description="Stand-in family, hub id or directory.")
    revision: str | None = None
    context: int
    rope_theta: float
    vocab_size: int
    peak_lr: float
    lr_end: float
    steps: int | None = None
    tokens: int | None = None
    mix: dict[str, float] = Field(default_factory=dict)
    note: str = ""


class PlanSummary(Strict):
    recipe: str
    scale: str
    objectives: list[str] = Field(
        default_factory=list, description="The recipe's target capabilities (what the report calls intended)."
    )
    layout: Layout
    model: dict[str, Any]
    base: BaseSummary
    stages: list[StagePlan]
    merges: list[MergePlan]
    final: str
    evaluation: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    compute: dict[str, Any] | None = None


class Plan(BaseModel):
    """Everything one planning produces; `write_plan` splits it into the files above."""

    summary: PlanSummary
    data: DataSpec
    base: BaseSpec
    mid: MidSpec
    evaluation: EvalSpec

    def to_json(self) -> dict[str, Any]:
        return self.summary.model_dump(mode="json")

    # conveniences used by the CLI's printer and the tests
    @property
    def recipe(self) -> str:
        return self.summary.recipe

    @property
    def stages(self) -> list[StagePlan]:
        return self.summary.stages

    @property
    def notes(self) -> list[str]:
        return self.summary.notes


# ---------------------------------------------------------------- reading and writing

PLAN_FILES: dict[str, Any] = {
    "plan": PlanSummary,
    "data": DataSpec,
    "base": BaseSpec,
    "midtrain": MidSpec,
    "eval": EvalSpec,
}


def write_plan(plan: Plan, directory: Path) -> dict[str, Path]:
    """One file per consumer, so a DVC stage that depends on one of them reruns only when it changes."""
    from midtrain.io import write_json

    parts: dict[str, Any] = {
        "plan": plan.summary,
        "data": plan.data,
        "base": plan.base,
        "midtrain": plan.mid,
        "eval": plan.evaluation,
    }
    written: dict[str, Path] = {}
    for name, model in parts.items():
        data = model.model_dump(mode="json")
        _validate(PLAN_FILES[name], data, directory / f"{name}.json")  # what is written must read back
        path = directory / f"{name}.json"
        write_json(path, data)
        written[name] = path
    return written


@overload
def read_plan_file(directory: Path, name: Literal["plan"]) -> PlanSummary: ...
@overload
def read_plan_file(directory: Path, name: Literal["data"]) -> BuiltinData | StandInData | SourceData: ...
@overload
def read_plan_file(directory: Path, name: Literal["base"]) -> PretrainBase | PretrainedBase: ...
@overload
def read_plan_file(directory: Path, name: Literal["midtrain"]) -> MidSpec: ...
@overload
def read_plan_file(directory: Path, name: Literal["eval"]) -> StandInEval | BenchmarkEval: ...


def read_plan_file(directory: Path, name: str) -> object:
    """Read and validate one plan file (`plan`, `data`, `base`, `midtrain` or `eval`)."""
    path = Path(directory) / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MidtrainError.single(
            "plan file not found; run the plan stage first (`dvc repro plan`)", file=path
        ) from None
    except json.JSONDecodeError as exc:
        raise MidtrainError.single(f"plan file is not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    return _validate(PLAN_FILES[name], data, path)


def _validate(kind: Any, data: Any, path: Path) -> object:
    """`data` as a `kind`, or the problems, located in `path`. `kind` is a model class or an Annotated
    union of models: a type form, which annotations cannot name yet, hence Any."""
    from pydantic import TypeAdapter

    from midtrain.yamlio import LineMap, problems_from_validation

    try:
        adapter: TypeAdapter[object] = TypeAdapter(kind)
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise MidtrainError(problems_from_validation(exc, path, LineMap(), data=data, model=kind)) from None
