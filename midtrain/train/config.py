"""The specification of one training run of one stage: everything the trainer reads, nothing else.

`midtrain plan` writes these (one JSON file per stage and run); `midtrain train RUN.json` executes
one. Keeping it a validated, serialisable model is what makes runs reproducible and resumable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from midtrain.schema.base import Family, Strict
from midtrain.schema.rope import Rope
from midtrain.schema.schedule import Schedule
from midtrain.schema.stage import Optimizer

# Bounds that keep a run specification from asking for absurd sizes: each is far beyond any real
# run, and past it numpy / torch would allocate without bound, overflow int32 indices or hang.
# The mixture sampler (midtrain/data/mixture.py) checks the same size limits itself.
MAX_SEED = 2**31 - 1
MAX_THREADS = 1024
MAX_GLOBAL_BATCH = 1_048_576  # sequences per optimizer step
MAX_SEQUENCE_LENGTH = 16_777_216
MAX_STEPS = 1_000_000_000
MAX_TOKENS_PER_STEP = 2**31  # global_batch * sequence_length

StreamName = Annotated[str, Field(min_length=1, pattern=r"\S")]
Share = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def non_finite(value: object, path: str = "") -> list[str]:
    """Field paths of every NaN or infinite float inside `value` (a model dump)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{path or '<value>'} = {value}"]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in non_finite(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, (list, tuple)):
        return [p for index, item in enumerate(value) for p in non_finite(item, f"{path}[{index}]")]
    return []


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
    layer_types: list[Literal["full_attention", "sliding_attention"]] | None = Field(
        None, description="Per-layer attention (the recipe's `attention` pattern at this depth)."
    )
    sliding_window: int | None = Field(None, gt=0)
    no_rope_layers: list[Literal[0, 1]] | None = Field(
        None, description="Per layer: 1 uses RoPE, 0 is a NoPE layer (SmolLM3 / Llama 4 convention)."
    )

    @model_validator(mode="after")
    def _layers(self) -> NewModel:
        for name in ("layer_types", "no_rope_layers"):
            value = getattr(self, name)
            if value is not None and len(value) != self.dims.num_hidden_layers:
                raise ValueError(f"{name} has {len(value)} entries for {self.dims.num_hidden_layers} layers")
        if self.layer_types and "sliding_attention" in self.layer_types and self.sliding_window is None:
            raise ValueError("sliding_attention layers need sliding_window")
        return self


class Pretrained(Strict):
    """A saved model: a local directory written by midtrain / transformers, or a hub id + revision."""

    path: str
    revision: str | None = None


class Polyak(Strict):
    checkpoints: int = Field(
        ge=2, description="How many snapshots, evenly spaced to the end of the stage, are averaged."
    )


class FimSpec(Strict):
    """Fill-in-the-middle as the data path applies it (see midtrain/data/fim.py)."""

    rate: float = Field(ge=0, le=1, description="Share of documents rearranged.")
    spm_rate: float = Field(0.0, ge=0, le=1, description="Share of the rearranged ones in SPM order.")
    level: Literal["document", "context"] = "document"
    prefix: str = Field("<|fim_prefix|>", min_length=1)
    middle: str = Field("<|fim_middle|>", min_length=1)
    suffix: str = Field("<|fim_suffix|>", min_length=1)
    streams: list[StreamName] | None = Field(None, description="Streams it applies to; None: every stream.")


class BatchPhase(Strict):
    """From optimizer step `step` on, `global_batch` sequences per step (a batch ramp)."""

    step: int = Field(gt=0, le=MAX_STEPS)
    global_batch: int = Field(gt=0, le=MAX_GLOBAL_BATCH)


class RunSpec(Strict):
    name: str = Field(description="Label of this run, e.g. 'anneal/run-1'.")
    out: Path
    init: NewModel | Pretrained
    tokenizer: Path
    data: Path = Field(description="A `midtrain data prepare` directory.")
    streams: dict[StreamName, Share] = Field(min_length=1, description="Stream name -> share of sequences.")
    sequence_length: int = Field(gt=0, le=MAX_SEQUENCE_LENGTH)
    global_batch: int = Field(gt=0, le=MAX_GLOBAL_BATCH, description="Sequences per optimizer step, over all ranks.")
    micro_batch: Annotated[int, Field(gt=0, le=MAX_GLOBAL_BATCH)] | Literal["auto"] = Field(
        "auto",
        description="Sequences per forward pass on one rank; auto: the largest that fits in memory (train/auto.py).",
    )
    steps: int = Field(gt=0, le=MAX_STEPS)
    schedule: Schedule
    base_lr: float | None = Field(None, ge=0, allow_inf_nan=False, description="The LR a from_base schedule starts at.")
    optimizer: Optimizer = Field(default_factory=Optimizer)
    rope: Rope | None = None
    max_position_embeddings: int | None = Field(None, gt=0)
    z_loss: float | None = Field(None, ge=0, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    data_seed: int = Field(0, ge=0, le=MAX_SEED)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="bf16 autocast, fp32, or auto (bf16 where the hardware has it natively; see train/precision.py).",
    )
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model; auto: when the run is long enough to repay it (train/auto.py)."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="Attention kernels; auto: FlashAttention-2 on GPUs that have it, else SDPA."
    )
    optimizer_kernel: Literal["auto", "fused", "foreach", "loop"] = Field(
        "auto", description="AdamW's implementation; auto: fused on GPUs, foreach on CPUs."
    )
    activation_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="Recompute activations in the backward pass; auto: only when memory requires it."
    )
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    checkpoint_every: int = Field(50, gt=0)
    keep_last: int = Field(2, ge=1)
    log_every: int = Field(1, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    polyak: Polyak | None = None
    max_epochs: dict[StreamName, Share] = Field(default_factory=dict)
    on_repeat: Literal["error", "warn"] = "error"
    threads: int | None = Field(
        None, ge=1, le=MAX_THREADS, description="torch threads per process; default cores / processes."
    )
    fim: FimSpec | None = None
    streams_end: dict[StreamName, Share] | None = Field(
        None, description="A mixture ramp: stream shares at the last step, moving linearly from `streams`."
    )
    batch_ramp: list[BatchPhase] = Field(
        default_factory=list, description="Later batch sizes; `global_batch` is the batch until the first one."
    )
    optimizer_from: str | None = Field(
        None, description="A run directory whose final optimizer state this run continues (optimizer_state: carry)."
    )
    save_at: list[int] = Field(
        default_factory=list, description="Steps after which a model snapshot is kept in OUT/at-step-<step>/model."
    )
    upscale: list[tuple[int, int]] | None = Field(
        None, description="Depth up-scaling: [start, end) layer ranges of the init model, concatenated."
    )

    @model_validator(mode="after")
    def _check(self) -> RunSpec:
        bad = non_finite(self.model_dump(mode="python"))
        if bad:
            raise ValueError(f"numbers must be finite (no NaN or infinity), found {', '.join(bad[:5])}")
        if not any(share > 0 for share in self.streams.values()):
            raise ValueError("streams: at least one stream needs a share > 0")
        if self.micro_batch != "auto" and self.micro_batch > self.global_batch:
            raise ValueError(f"micro_batch {self.micro_batch} is larger than global_batch {self.global_batch}")
        if self.global_batch * self.sequence_length > MAX_TOKENS_PER_STEP:
            raise ValueError(
                f"global_batch × sequence_length = {self.global_batch * self.sequence_length:,} tokens per step, "
                f"more than the limit of {MAX_TOKENS_PER_STEP:,}"
            )
        if self.micro_batch != "auto" and self.global_batch % self.micro_batch:
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of micro_batch {self.micro_batch}")
        if abs(sum(self.streams.values()) - 1.0) > 1e-6:
            raise ValueError(f"stream shares must sum to 1, found {sum(self.streams.values()):.6g}")
        if self.schedule.type == "from_base" and self.base_lr is None:
            raise ValueError("a from_base schedule needs base_lr")
        if self.polyak is not None and self.polyak.checkpoints > self.steps:
            raise ValueError(f"cannot average {self.polyak.checkpoints} snapshots of a {self.steps}-step stage")
        self._check_extras()
        return self

    def _check_extras(self) -> None:
        if self.streams_end is not None:
            if set(self.streams_end) != set(self.streams):
                raise ValueError("streams_end must name the same streams as streams")
            if abs(sum(self.streams_end.values()) - 1.0) > 1e-6:
                raise ValueError(f"streams_end shares must sum to 1, found {sum(self.streams_end.values()):.6g}")
        steps = [phase.step for phase in self.batch_ramp]
        if steps != sorted(set(steps)) or any(step >= self.steps for step in steps):
            raise ValueError(
                f"batch_ramp steps must increase and lie inside the run's {self.steps} steps, found {steps}"
            )
        for phase in self.batch_ramp:
            if self.micro_batch != "auto" and phase.global_batch % self.micro_batch:
                raise ValueError(
                    f"batch_ramp batch {phase.global_batch} is not a multiple of micro_batch {self.micro_batch}"
                )
            if phase.global_batch * self.sequence_length > MAX_TOKENS_PER_STEP:
                raise ValueError(f"batch_ramp batch {phase.global_batch} × sequence_length is over the token limit")
        if any(not 0 < step <= self.steps for step in self.save_at):
            raise ValueError(f"save_at steps must lie in 1..{self.steps}, found {self.save_at}")
        if self.upscale is not None:
            if not self.upscale or any(not 0 <= a < b for a, b in self.upscale):
                raise ValueError(f"upscale needs [start, end) ranges with 0 ≤ start < end, found {self.upscale}")
            if isinstance(self.init, NewModel):
                raise ValueError("upscale repeats the layers of a saved model; init must be a model path")

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        import json

        from pydantic import ValidationError

        from midtrain.errors import MidtrainError
        from midtrain.yamlio import LineMap, problems_from_validation

        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise MidtrainError.single("run specification not found", file=Path(path)) from None
        except json.JSONDecodeError as exc:
            raise MidtrainError.single(
                f"run specification is not valid JSON: {exc.msg}", file=Path(path), line=exc.lineno
            ) from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MidtrainError(problems_from_validation(exc, Path(path), LineMap(), data=data, model=cls)) from None
