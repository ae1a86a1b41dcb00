"""What a user asks to plan: `params.yaml` as a typed model (and the CLI options that write it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from midtrain.errors import MidtrainError
from midtrain.schema.base import Count, Slug, Strict

PARAMS = "params.yaml"


class OwnBase(Strict):
    """Mid-train this base instead of a stand-in: `--base`, `--revision`, `--base-peak-lr`, `--tokens`, `--context`."""

    model: str | None = Field(
        None, max_length=512, description="Hub id or directory; None: the recipe's published base (full scale)."
    )
    revision: str | None = Field(
        None, max_length=256, description="Commit the hub id resolved to (pinned by `midtrain reproduce`)."
    )
    requested_revision: str | None = Field(
        None, max_length=256, description="The revision the user asked for (branch, tag or commit)."
    )
    fingerprint: str | None = Field(
        None, max_length=256, description="Digest of a local base directory, so DVC reruns when it changes."
    )
    peak_lr: float | None = Field(None, gt=0, le=1, description="Peak LR of the base's own pre-training.")
    tokens: Count | None = Field(None, description="Mid-training tokens per run, over all stages.")
    context: int | None = Field(
        None, gt=0, le=16 * 1024 * 1024, description="Base context to plan from (default: its config)."
    )
    stand_in_data: bool = Field(
        False, description="Use each source's built-in stand-in corpus, tokenized with the base's tokenizer."
    )
    min_steps: int = Field(20, ge=1, le=10_000_000, description="No stage runs fewer optimizer steps.")
    micro_batch_tokens: int | None = Field(None, gt=0, le=1 << 30, description="Tokens per forward pass and process.")


class EvalChoice(Strict):
    tasks: list[str] | None = Field(None, description="lm-eval tasks; default: from the recipe's objectives.")
    include: list[str] = Field(default_factory=list, description="Directories of local lm-eval task YAML files.")
    limit: int | None = Field(None, gt=0, description="Documents per task (lm-eval --limit).")

    @field_validator("tasks")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        for task in value or []:
            if not task or not all(c.isalnum() or c in "_-." for c in task):
                raise ValueError(f"not an lm-eval task name: {task!r}")
        return value


class PlanRequest(Strict):
    recipe: Slug
    scale: Slug = "tiny"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    overrides: list[str] = Field(default_factory=list)
    base: OwnBase | None = None
    eval: EvalChoice = Field(default_factory=EvalChoice)
    layout: dict[str, str] | None = Field(None, description="Written by `midtrain reproduce` for dvc.yaml's paths.")


def read_params(root: Path) -> PlanRequest:
    """params.yaml, validated, with file and line in every error."""
    from midtrain.yamlio import LineMap, load_yaml, problems_from_validation

    path = root / PARAMS
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise MidtrainError.single("params.yaml must be a mapping with at least `recipe:`", file=path)
    try:
        return PlanRequest.model_validate(data)
    except ValidationError as exc:
        raise MidtrainError(
            problems_from_validation(
                exc, path, lines if isinstance(lines, LineMap) else LineMap(), data=data, model=PlanRequest
            )
        ) from None


def write_params(root: Path, request: PlanRequest) -> Path:
    from midtrain.io import write_text
    from midtrain.yamlio import dump_yaml

    data: dict[str, Any] = request.model_dump(mode="json", exclude_defaults=False)
    if data["base"] is not None:
        data["base"] = {k: v for k, v in data["base"].items() if v is not None}
    text = (
        "# Which recipe the pipeline reproduces, on which base (see dvc.yaml). Written by `midtrain reproduce`;\n"
        "# `layout` names the data/ and runs/ folders that dvc.yaml uses. Edit with care, or rerun `midtrain reproduce`.\n"
    )
    text += dump_yaml(data)
    path = root / PARAMS
    write_text(path, text)
    return path
