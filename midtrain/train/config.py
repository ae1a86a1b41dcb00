"""The specification of one training run of one stage: everything the trainer reads, nothing else.

`midtrain plan` writes these (one JSON file per stage and run); `midtrain train RUN.json` executes
one. Keeping it a validated, serialisable model is what makes runs reproducible and resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from midtrain.schema.base import Family, Strict
from midtrain.schema.rope import Rope
from midtrain.schema.schedule import Schedule
from midtrain.schema.stage import Optimizer


class ModelDims(Strict):
    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)


class NewModel(Strict):
    """A freshly initialised model of a family (the tiny stand-in, or a small one)."""

    family: Family
    dims: ModelDims
    vocab_size: int = Field(gt=0)
    rope_theta: float = Field(10_000.0, gt=0)
    max_position_embeddings: int = Field(gt=0)
    tie_word_embeddings: bool = False


class Pretrained(Strict):
    """A saved model: a local directory written by midtrain / transformers, or a hub id + revision."""

    path: str
    revision: str | None = None


class Polyak(Strict):
    checkpoints: int = Field(ge=2, description="How many snapshots, evenly spaced to the end of the stage, are averaged.")


class RunSpec(Strict):
    name: str = Field(description="Label of this run, e.g. 'anneal/run-1'.")
    out: Path
    init: NewModel | Pretrained
    tokenizer: Path
    data: Path = Field(description="A `midtrain data prepare` directory.")
    streams: dict[str, float] = Field(description="Stream name -> share of sequences.")
    sequence_length: int = Field(gt=0)
    global_batch: int = Field(gt=0, description="Sequences per optimizer step, over all ranks.")
    micro_batch: int = Field(gt=0, description="Sequences per forward pass on one rank.")
    steps: int = Field(gt=0)
    schedule: Schedule
    base_lr: float | None = Field(None, description="The LR a from_base schedule starts at.")
    optimizer: Optimizer = Field(default_factory=Optimizer)
    rope: Rope | None = None
    max_position_embeddings: int | None = Field(None, gt=0)
    z_loss: float | None = Field(None, ge=0)
    seed: int = 0
    data_seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    activation_checkpointing: bool = False
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    checkpoint_every: int = Field(50, gt=0)
    keep_last: int = Field(2, ge=1)
    log_every: int = Field(1, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    polyak: Polyak | None = None
    max_epochs: dict[str, float] = Field(default_factory=dict)
    on_repeat: Literal["error", "warn"] = "error"
    threads: int | None = Field(None, gt=0, description="torch threads per process; default cores / processes.")

    @model_validator(mode="after")
    def _check(self):  # type: ignore[no-untyped-def]
        if self.global_batch % self.micro_batch:
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of micro_batch {self.micro_batch}")
        if abs(sum(self.streams.values()) - 1.0) > 1e-6:
            raise ValueError(f"stream shares must sum to 1, found {sum(self.streams.values()):.6g}")
        if self.schedule.type == "from_base" and self.base_lr is None:
            raise ValueError("a from_base schedule needs base_lr")
        if self.polyak is not None and self.polyak.checkpoints > self.steps:
            raise ValueError(f"cannot average {self.polyak.checkpoints} snapshots of a {self.steps}-step stage")
        return self

    @classmethod
    def load(cls, path: Path) -> "RunSpec":
        import json

        from pydantic import ValidationError

        from midtrain.errors import MidtrainError
        from midtrain.yamlio import LineMap, problems_from_validation

        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise MidtrainError.single("run specification not found", file=Path(path)) from None
        except json.JSONDecodeError as exc:
            raise MidtrainError.single(f"run specification is not valid JSON: {exc.msg}", file=Path(path), line=exc.lineno) from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MidtrainError(problems_from_validation(exc, Path(path), LineMap())) from None
