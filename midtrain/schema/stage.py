"""A mid-training stage: budget, batch, sequence length, mixture, schedule, optimizer, RoPE, runs."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from midtrain.errors import FieldProblem, LocatedErrors
from midtrain.schema.base import (
    UNKNOWN,
    Capability,
    Count,
    CountOrUnknown,
    Fraction,
    Slug,
    StageKind,
    StepsOrUnknown,
    Strict,
    Unknown,
)
from midtrain.schema.mixture import Mixture
from midtrain.schema.rope import Rope
from midtrain.schema.schedule import Schedule

MAX_SEQUENCE_LENGTH = 16 * 1024 * 1024


class Muon(Strict):
    """Muon (Jordan et al. 2024) on hidden weight matrices; the other parameters use AdamW."""

    momentum: float = Field(0.95, ge=0, lt=1)
    nesterov: bool = True
    ns_steps: int = Field(5, ge=1, le=20, description="Newton-Schulz iterations that orthogonalise the update.")
    rms_match: float | None = Field(
        None,
        gt=0,
        description="Scale updates to this RMS (Moonlight/Kimi K2: 0.2 · sqrt(max(A, B)) matches AdamW's RMS).",
    )


class QkClip(Strict):
    """QK-Clip (Kimi K2 §2.1): after a step, rescale a head's W_q and W_k when its max attention logit exceeds tau."""

    tau: float = Field(gt=0, description="The largest attention logit allowed.")
    alpha: float = Field(0.5, ge=0, le=1, description="Share of the rescale applied to W_q (the rest to W_k).")


class Mup(Strict):
    """Maximal update parametrisation: the base width the hyper-parameters were tuned at, and multipliers."""

    base_width: int | None = Field(None, gt=0, description="d_model of the proxy model the LR was tuned on.")
    multipliers: dict[str, float] = Field(
        default_factory=dict,
        description="Named forward multipliers (embedding, attention logits, lm_head, ...) as published.",
    )


class AdEMAMix(Strict):
    """AdEMAMix (Pagliardini et al. 2024): a second, slow EMA of gradients mixed in with weight alpha."""

    alpha: float = Field(gt=0)
    beta3: float = Field(gt=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0, description="Steps over which alpha and beta3 ramp up.")


class Optimizer(Strict):
    type: Literal["adamw", "adam", "muon", "adafactor", "ademamix"] = "adamw"
    betas: tuple[float, float] = Field((0.9, 0.95))
    eps: float = Field(1e-8, gt=0, lt=1)
    weight_decay: float = Field(0.1, ge=0, le=10)
    no_decay: list[Literal["embeddings", "norms", "biases"]] = Field(
        default_factory=list, description="Parameter groups trained without weight decay."
    )
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the global gradient norm to this value.")
    mup_width_ratio: float | None = Field(
        None,
        gt=0,
        description="µP: the LR of hidden weight matrices is divided by this width ratio (d_model / d_base).",
    )
    mup: Mup | None = None
    muon: Muon | None = Field(None, description="Muon settings (type: muon).")
    qk_clip: QkClip | None = None
    ademamix: AdEMAMix | None = Field(None, description="AdEMAMix settings (type: ademamix).")

    @model_validator(mode="after")
    def _betas(self) -> Optimizer:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), found {self.betas}")
        if self.muon is not None and self.type != "muon":
            raise ValueError(f"muon settings need type: muon, found type: {self.type}")
        if self.ademamix is not None and self.type != "ademamix":
            raise ValueError(f"ademamix settings need type: ademamix, found type: {self.type}")
        return self


class BatchStep(Strict):
    """A later batch size in a ramp: from `after_tokens` into the stage (or when `when` happens) on."""

    sequences: int | None = Field(None, gt=0, le=10_000_000)
    tokens: Count | None = None
    after_tokens: Count | None = Field(None, description="Tokens into the stage at which this batch starts.")
    when: str | None = Field(None, description="The trigger in words when it is not a token count (a loss plateau).")

    @model_validator(mode="after")
    def _some(self) -> BatchStep:
        if self.sequences is None and self.tokens is None:
            raise ValueError("give the new batch as sequences and/or tokens per step")
        if self.after_tokens is None and self.when is None:
            raise ValueError("say when the batch changes: after_tokens, or `when` in words")
        return self


class Batch(Strict):
    """Global batch: sequences per optimizer step and/or tokens per optimizer step; `ramp` grows it."""

    sequences: int | None = Field(None, gt=0, le=10_000_000)
    tokens: Count | None = None
    ramp: list[BatchStep] = Field(
        default_factory=list, description="Later batch sizes, in order; the batch above is the starting one."
    )

    @model_validator(mode="after")
    def _some(self) -> Batch:
        if self.sequences is None and self.tokens is None:
            raise ValueError("give sequences and/or tokens per step")
        marks = [step.after_tokens for step in self.ramp if step.after_tokens is not None]
        if marks != sorted(marks) or len(set(marks)) != len(marks):
            raise ValueError(f"ramp steps must be in increasing after_tokens order, found {marks}")
        return self


class FimTokens(Strict):
    """The sentinel tokens of fill-in-the-middle, as text in the tokenizer's vocabulary."""

    prefix: str = Field(min_length=1)
    middle: str = Field(min_length=1)
    suffix: str = Field(min_length=1)


class Fim(Strict):
    """Fill-in-the-middle (Bavarian et al. 2022): a share of documents is cut in three and reordered.

    PSM puts prefix, suffix, then middle; SPM puts suffix, prefix, then middle. The data path applies it
    when it packs a stage's sequences (midtrain/data/fim.py)."""

    rate: Fraction = Field(description="Share of documents rearranged.")
    spm_rate: Fraction = Field(0.0, description="Share of the rearranged documents in SPM order; the rest are PSM.")
    level: Literal["document", "context"] = Field(
        "document", description="Cut whole documents before packing, or packed contexts after."
    )
    tokens: FimTokens | None = Field(
        None, description="Sentinel tokens; default <|fim_prefix|> <|fim_middle|> <|fim_suffix|>."
    )
    applies_to: list[str] | None = Field(None, description="Sources it applies to (default: code sources only).")


class Upscale(Strict):
    """Depth up-scaling / model growth: the stage's first model repeats layers of the model it starts from.

    `segments` are [start, end) layer ranges of that model, concatenated in order: SOLAR's 32 → 48
    layers is [[0, 24], [8, 32]]; stacking a 14-layer model twice is [[0, 14], [0, 14]]."""

    from_layers: int = Field(gt=0, le=100_000, description="Layers of the model the stage starts from.")
    segments: list[tuple[int, int]] = Field(min_length=1)
    note: str | None = None

    @model_validator(mode="after")
    def _ranges(self) -> Upscale:
        for start, end in self.segments:
            if not 0 <= start < end <= self.from_layers:
                raise ValueError(f"segment [{start}, {end}) is not a range of the {self.from_layers} layers")
        return self

    @property
    def to_layers(self) -> int:
        return sum(end - start for start, end in self.segments)


class InitAt(Strict):
    """Where in the `init` stage a branch starts, when not at its end."""

    tokens: Count | None = Field(None, description="Tokens into the init stage (one run).")
    fraction: float | None = Field(None, gt=0, lt=1, description="Share of the init stage's steps.")

    @model_validator(mode="after")
    def _one(self) -> InitAt:
        if (self.tokens is None) == (self.fraction is None):
            raise ValueError("give tokens or fraction, exactly one")
        return self


class Runs(Strict):
    """Repeated runs of a stage (seeds / data orders) whose results are merged."""

    count: int = Field(1, ge=1, le=64)
    vary: Literal["data-order", "seed", "data-order-and-seed"] = "data-order"
    seeds: list[int] | None = None

    @model_validator(mode="after")
    def _seeds(self) -> Runs:
        if self.seeds is not None and len(self.seeds) != self.count:
            raise ValueError(f"{len(self.seeds)} seeds listed for {self.count} runs")
        return self


class Stage(Strict):
    name: Slug
    kind: StageKind
    description: str | None = None
    init: str = Field("previous", description="'base', 'previous', or the name of an earlier stage (or merge).")
    objectives: list[Capability] = Field(default_factory=list)
    init_at: InitAt | None = Field(None, description="Start from the middle of the `init` stage (a branch point).")
    branch: bool = Field(
        False,
        description="A side branch (e.g. a language or long-context variant): left out of totals; `previous` skips it.",
    )
    optimizer_state: Literal["carry", "reset"] | None = Field(
        None, description="Continue the init model's optimizer state, or start a fresh one."
    )
    upscale: Upscale | None = None
    tokens: CountOrUnknown | None = Field(None, description="Token budget of one run of this stage, or 'unknown'.")
    steps: StepsOrUnknown | None = None
    sequence_length: int = Field(gt=0, le=MAX_SEQUENCE_LENGTH)
    batch: Batch | Unknown | None = None
    mixture: Mixture
    schedule: Schedule
    optimizer: Optimizer | None = Field(None, description="Overrides the recipe's optimizer for this stage.")
    rope: Rope | None = None
    runs: Runs = Field(default_factory=Runs)
    z_loss: float | None = Field(None, ge=0, le=1, description="Coefficient of the z-loss term (log² Z).")
    aux_losses: dict[str, float] = Field(
        default_factory=dict,
        description="Other loss weights or rates in force, by name (e.g. moe_balance_alpha, mtp_weight, router_bias_update_speed).",
    )
    fim: Fim | None = Field(None, description="Fill-in-the-middle settings (schema_version 1 had `fim_rate`).")
    advance_when: str | None = Field(
        None, description="A criterion that ends the stage instead of a fixed budget (Llama 3 §3.4.2)."
    )

    @model_validator(mode="after")
    def _budget(self) -> Stage:
        problems: list[FieldProblem] = []
        if self.tokens is None and self.steps is None:
            problems.append(((), "give the stage's budget as tokens or steps (or tokens: unknown)"))
        problems += self._batch_problems() + self._steps_problems() + self._mixture_problems() + self._rope_problems()
        if problems:
            raise LocatedErrors(problems)
        return self

    @property
    def known_tokens(self) -> float | None:
        return None if self.tokens == UNKNOWN else self.tokens  # type: ignore[return-value]  # narrowed by value

    @property
    def known_steps(self) -> int | None:
        return None if self.steps == UNKNOWN else self.steps  # type: ignore[return-value]  # narrowed by value

    @property
    def known_batch(self) -> Batch | None:
        return self.batch if isinstance(self.batch, Batch) else None

    def unknowns(self) -> list[str]:
        """Fields of this stage written as `unknown` (the schedule included)."""
        found = [name for name in ("tokens", "steps", "batch") if getattr(self, name) == UNKNOWN]
        if self.schedule.type == "unknown":
            found.append("schedule")
        return found

    def _batch_problems(self) -> list[FieldProblem]:
        """batch.sequences × sequence_length against batch.tokens, when both are given."""
        batch = self.known_batch
        if not (batch and batch.sequences and batch.tokens):
            return []
        implied = batch.sequences * self.sequence_length
        if abs(implied - batch.tokens) / batch.tokens <= 0.02:
            return []
        return [
            (
                ("batch", "tokens"),
                f"batch of {batch.sequences} sequences × {self.sequence_length} = {implied:,} tokens "
                f"disagrees with batch.tokens {batch.tokens:,.0f}",
            )
        ]

    def _steps_problems(self) -> list[FieldProblem]:
        """steps × tokens per step against tokens, when both are given."""
        tokens, steps = self.known_tokens, self.known_steps
        if tokens is None or steps is None or not self.tokens_per_step():
            return []
        implied = self.tokens_for_steps(steps)
        if implied is None or abs(implied - tokens) / tokens <= 0.02:
            return []
        return [
            (
                ("steps",),
                f"{steps:,} steps at {self._batch_text()} = {implied:.4g} tokens disagrees with tokens {tokens:.4g}",
            )
        ]

    def _mixture_problems(self) -> list[FieldProblem]:
        """The mixture's tokens (all of them, or some next to shares) against the stage's budget."""
        problems: list[FieldProblem] = []
        budget = self.total_tokens()
        mixture_tokens = self.mixture.total_tokens()
        if mixture_tokens is not None and budget is not None and abs(mixture_tokens - budget) / budget > 0.02:
            problems.append(
                (("mixture",), f"mixture tokens add up to {mixture_tokens:.4g} but the stage budget is {budget:.4g}")
            )
        if budget is not None and mixture_tokens is None:
            shares = self.mixture.shares()
            for index, component in enumerate(self.mixture.components):
                if component.tokens is not None:
                    expected = shares[component.source] * budget
                    if abs(component.tokens - expected) / expected > 0.02:
                        problems.append(
                            (
                                ("mixture", "components", index, "tokens"),
                                f"{component.source}: {component.tokens:.4g} tokens disagrees with its share of the "
                                f"budget ({shares[component.source]:.4g} × {budget:.4g} = {expected:.4g})",
                            )
                        )
        return problems

    def _rope_problems(self) -> list[FieldProblem]:
        """The sequence length against what the stage's RoPE scaling covers."""
        if self.rope is None:
            return []
        capacity = self.rope.capacity(None)
        if capacity is None or self.sequence_length <= capacity:
            return []
        return [
            (
                ("sequence_length",),
                f"sequence_length {self.sequence_length:,} exceeds what the RoPE scaling covers "
                f"({capacity:,} = original × factor)",
            )
        ]

    def _step_tokens(self, step: Batch | BatchStep) -> float:
        if step.sequences is not None:
            return float(step.sequences * self.sequence_length)
        return float(step.tokens or 0.0)

    def tokens_per_step(self) -> float | None:
        """Tokens per optimizer step at the start of the stage (before any batch ramp)."""
        batch = self.known_batch
        return None if batch is None else self._step_tokens(batch)

    def batch_phases(self) -> list[tuple[float, float]] | None:
        """(tokens into the stage where a batch starts, tokens per step) for the start and each ramp step;
        None when a ramp step has only a `when` in words."""
        batch = self.known_batch
        if batch is None:
            return None
        phases = [(0.0, self._step_tokens(batch))]
        for step in batch.ramp:
            if step.after_tokens is None:
                return None
            phases.append((step.after_tokens, self._step_tokens(step)))
        return phases

    def _batch_text(self) -> str:
        batch = self.known_batch
        if batch is not None and batch.ramp:
            return "the ramped batch"
        return f"{self.tokens_per_step() or 0:,.0f} tokens/step"

    def tokens_for_steps(self, steps: int) -> float | None:
        """Tokens that `steps` optimizer steps take, batch ramp included."""
        phases = self.batch_phases()
        if not phases:
            return None
        tokens, left = 0.0, float(steps)
        for index, (_, per_step) in enumerate(phases):
            following = phases[index + 1][0] if index + 1 < len(phases) else math.inf
            room = math.inf if following == math.inf else max(0.0, math.ceil((following - tokens) / per_step))
            take = min(left, room)
            tokens += take * per_step
            left -= take
            if left <= 0:
                break
        return tokens

    def steps_for_tokens(self, tokens: float) -> int | None:
        """Optimizer steps that `tokens` take, batch ramp included."""
        phases = self.batch_phases()
        if not phases:
            return None
        steps = 0.0
        for index, (start, per_step) in enumerate(phases):
            end = min(phases[index + 1][0], tokens) if index + 1 < len(phases) else tokens
            if end > start:
                steps += (end - start) / per_step
        return max(1, round(steps))

    def total_tokens(self) -> float | None:
        """Tokens of one run: stated, or steps × tokens per step."""
        if self.known_tokens is not None:
            return self.known_tokens
        if self.known_steps is not None:
            return self.tokens_for_steps(self.known_steps)
        return None

    def total_steps(self) -> int | None:
        if self.known_steps is not None:
            return self.known_steps
        if self.known_tokens is not None:
            return self.steps_for_tokens(self.known_tokens)
        return None
