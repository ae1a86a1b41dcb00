"""A mid-training stage: budget, batch, sequence length, mixture, schedule, optimizer, RoPE, runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from midtrain.errors import FieldProblem, LocatedErrors
from midtrain.schema.base import Capability, Count, Slug, StageKind, Strict
from midtrain.schema.mixture import Mixture
from midtrain.schema.rope import Rope
from midtrain.schema.schedule import Schedule

MAX_SEQUENCE_LENGTH = 16 * 1024 * 1024


class Optimizer(Strict):
    type: Literal["adamw", "adam", "muon", "adafactor"] = "adamw"
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

    @model_validator(mode="after")
    def _betas(self) -> Optimizer:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), found {self.betas}")
        return self


class Batch(Strict):
    """Global batch: sequences per optimizer step and/or tokens per optimizer step."""

    sequences: int | None = Field(None, gt=0, le=10_000_000)
    tokens: Count | None = None

    @model_validator(mode="after")
    def _some(self) -> Batch:
        if self.sequences is None and self.tokens is None:
            raise ValueError("give sequences and/or tokens per step")
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
    tokens: Count | None = Field(None, description="Token budget of one run of this stage.")
    steps: int | None = Field(None, gt=0, le=100_000_000)
    sequence_length: int = Field(gt=0, le=MAX_SEQUENCE_LENGTH)
    batch: Batch | None = None
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
    fim_rate: float | None = Field(
        None, ge=0, le=1, description="Share of documents rearranged for fill-in-the-middle."
    )
    advance_when: str | None = Field(
        None, description="A criterion that ends the stage instead of a fixed budget (Llama 3 §3.4.2)."
    )

    @model_validator(mode="after")
    def _budget(self) -> Stage:
        problems: list[FieldProblem] = []
        if self.tokens is None and self.steps is None:
            problems.append(((), "give the stage's budget as tokens or steps"))
        problems += self._batch_problems() + self._steps_problems() + self._mixture_problems() + self._rope_problems()
        if problems:
            raise LocatedErrors(problems)
        return self

    def _batch_problems(self) -> list[FieldProblem]:
        """batch.sequences × sequence_length against batch.tokens, when both are given."""
        if not (self.batch and self.batch.sequences and self.batch.tokens):
            return []
        implied = self.batch.sequences * self.sequence_length
        if abs(implied - self.batch.tokens) / self.batch.tokens <= 0.02:
            return []
        return [
            (
                ("batch", "tokens"),
                f"batch of {self.batch.sequences} sequences × {self.sequence_length} = {implied:,} tokens "
                f"disagrees with batch.tokens {self.batch.tokens:,.0f}",
            )
        ]

    def _steps_problems(self) -> list[FieldProblem]:
        """steps × tokens per step against tokens, when both are given."""
        per_step = self.tokens_per_step()
        if self.tokens is None or self.steps is None or not per_step:
            return []
        implied = self.steps * per_step
        if abs(implied - self.tokens) / self.tokens <= 0.02:
            return []
        return [
            (
                ("steps",),
                f"{self.steps:,} steps × {per_step:,.0f} tokens/step = {implied:.4g} tokens "
                f"disagrees with tokens {self.tokens:.4g}",
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

    def tokens_per_step(self) -> float | None:
        if self.batch is None:
            return None
        if self.batch.sequences is not None:
            return float(self.batch.sequences * self.sequence_length)
        return self.batch.tokens

    def total_tokens(self) -> float | None:
        """Tokens of one run: stated, or steps × tokens per step."""
        if self.tokens is not None:
            return self.tokens
        per_step = self.tokens_per_step()
        if self.steps is not None and per_step:
            return self.steps * per_step
        return None

    def total_steps(self) -> int | None:
        if self.steps is not None:
            return self.steps
        per_step = self.tokens_per_step()
        if self.tokens is not None and per_step:
            return max(1, round(self.tokens / per_step))
        return None
