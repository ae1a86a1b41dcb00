"""Learning-rate schedules: a discriminated union, each a pure function `step -> lr` (no torch).

Every schedule is defined over one stage of `total_steps` optimizer steps. Warmup may be given in
steps (as papers state it) or as a fraction of the stage (what scaling keeps); `lr_at` is exact for
integer steps 0..total_steps and never touches global state, so resume and plotting are trivial.
"""

from __future__ import annotations

import math
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BeforeValidator, Field, model_validator

from midtrain.schema.base import Count, Fraction, LearningRate, Strict

DecayShape = Literal["linear", "cosine", "1-sqrt", "exponential"]
HeldOrDecayShape = Literal["linear", "cosine", "1-sqrt", "exponential", "none"]  # from_base may hold the LR
Shape = TypeVar("Shape", DecayShape, HeldOrDecayShape)  # the decays a schedule with a `decay` field accepts


def decay_factor(shape: str, progress: float, half_life_steps: float | None = None, steps_into: float = 0.0) -> float:
    """Multiplier in [0, 1] after `progress` (0..1) of a decay phase.

    linear: 1 - x; cosine: (1 + cos(pi x)) / 2; 1-sqrt: 1 - sqrt(x) (Hägele et al., 2024);
    exponential: 0.5 ** (steps_into / half_life) (MiniCPM §6.2).
    """
    x = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        return 1.0 - x
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(x)
    if shape == "exponential":
        if not half_life_steps:
            raise ValueError("exponential decay needs a half-life")
        return math.pow(0.5, max(steps_into, 0.0) / half_life_steps)
    raise ValueError(f"unknown decay shape {shape!r}")


class _Warmup(Strict):
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup from 0, in optimizer steps.")
    warmup_fraction: Fraction | None = Field(None, description="Linear warmup as a share of the stage's steps.")

    @model_validator(mode="after")
    def _one_warmup(self) -> _Warmup:
        if self.warmup_steps is not None and self.warmup_fraction is not None:
            raise ValueError("give warmup_steps or warmup_fraction, not both")
        return self

    def warmup_for(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        if self.warmup_fraction:
            return round(self.warmup_fraction * total_steps)
        return 0

    @staticmethod
    def _ramp(step: int, warmup: int, target: float) -> float | None:
        if warmup and step < warmup:
            return target * (step + 1) / warmup
        return None

    def warmup_text(self) -> str:
        if self.warmup_steps:
            return f"warmup {self.warmup_steps} steps, "
        if self.warmup_fraction:
            return f"warmup {self.warmup_fraction:.1%}, "
        return ""


class Constant(_Warmup):
    """A constant LR (after an optional warmup)."""

    type: Literal["constant"] = "constant"
    lr: LearningRate

    def lr_at(self, step: int, total_steps: int, base_lr: float | None = None) -> float:
        ramp = self._ramp(step, self.warmup_for(total_steps), self.lr)
        return self.lr if ramp is None else ramp

    def describe(self) -> str:
        return f"constant {self.lr:.3g}" + (f" ({self.warmup_text().rstrip(', ')})" if self.warmup_text() else "")


class Linear(_Warmup):
    """Linear from `start_lr` to `end_lr` over the stage (after an optional warmup to `start_lr`)."""

    type: Literal["linear"] = "linear"
    start_lr: LearningRate
    end_lr: LearningRate = 0.0

    def lr_at(self, step: int, total_steps: int, base_lr: float | None = None) -> float:
        warmup = self.warmup_for(total_steps)
        ramp = self._ramp(step, warmup, self.start_lr)
        if ramp is not None:
            return ramp
        span = max(total_steps - warmup, 1)
        return self.start_lr + (self.end_lr - self.start_lr) * min((step - warmup) / span, 1.0)

    def describe(self) -> str:
        return f"{self.warmup_text()}linear {self.start_lr:.3g} → {self.end_lr:.3g}"


class Cosine(_Warmup):
    """Cosine from `peak_lr` to `min_lr` over the stage (after an optional warmup)."""

    type: Literal["cosine"] = "cosine"
    peak_lr: LearningRate
    min_lr: LearningRate = 0.0

    def lr_at(self, step: int, total_steps: int, base_lr: float | None = None) -> float:
        warmup = self.warmup_for(total_steps)
        ramp = self._ramp(step, warmup, self.peak_lr)
        if ramp is not None:
            return ramp
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return self.min_lr + (self.peak_lr - self.min_lr) * decay_factor("cosine", progress)

    def describe(self) -> str:
        return f"{self.warmup_text()}cosine {self.peak_lr:.3g} → {self.min_lr:.3g}"


class _Decay(Strict, Generic[Shape]):
    decay: Shape = Field("linear")
    half_life_steps: float | None = Field(None, gt=0, description="Exponential decay: steps per halving.")
    half_life_fraction: Fraction | None = Field(
        None, description="Exponential decay: half-life as a share of the stage."
    )

    def half_life_for(self, total_steps: int) -> float | None:
        if self.half_life_steps is not None:
            return self.half_life_steps
        if self.half_life_fraction is not None:
            return max(self.half_life_fraction * total_steps, 1e-9)
        return None

    def _check_decay(self) -> None:
        has_half_life = self.half_life_steps is not None or self.half_life_fraction is not None
        if self.decay == "exponential" and not has_half_life:
            raise ValueError("exponential decay needs half_life_steps or half_life_fraction")
        if self.decay != "exponential" and has_half_life:
            raise ValueError(f"a half-life only applies to exponential decay, not {self.decay!r}")
        if self.half_life_steps is not None and self.half_life_fraction is not None:
            raise ValueError("give half_life_steps or half_life_fraction, not both")

    def decay_text(self) -> str:
        if self.decay != "exponential":
            return self.decay
        if self.half_life_steps is not None:
            return f"exponential, half-life {self.half_life_steps:g} steps"
        return f"exponential, half-life {self.half_life_fraction:.1%}"


class WSD(_Warmup, _Decay[DecayShape]):
    """Warmup-Stable-Decay (MiniCPM Eq. 1): warmup, hold `peak_lr`, then decay to `min_lr`."""

    type: Literal["wsd"] = "wsd"
    peak_lr: LearningRate
    min_lr: LearningRate = 0.0
    decay_fraction: Fraction | None = Field(None, description="Share of the stage's steps spent decaying.")
    decay_steps: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> WSD:
        self._check_decay()
        if (self.decay_fraction is None) == (self.decay_steps is None):
            raise ValueError("give exactly one of decay_fraction or decay_steps")
        return self

    def decay_start(self, total_steps: int) -> int:
        length = self.decay_steps if self.decay_steps is not None else round((self.decay_fraction or 0) * total_steps)
        return max(total_steps - min(length, total_steps), self.warmup_for(total_steps))

    def lr_at(self, step: int, total_steps: int, base_lr: float | None = None) -> float:
        warmup = self.warmup_for(total_steps)
        ramp = self._ramp(step, warmup, self.peak_lr)
        if ramp is not None:
            return ramp
        start = self.decay_start(total_steps)
        if step < start:
            return self.peak_lr
        length = max(total_steps - start, 1)
        factor = decay_factor(self.decay, (step - start) / length, self.half_life_for(total_steps), step - start)
        return self.min_lr + (self.peak_lr - self.min_lr) * factor

    def describe(self) -> str:
        share = f"{self.decay_fraction:.0%}" if self.decay_fraction is not None else f"{self.decay_steps} steps"
        return (
            f"{self.warmup_text()}WSD peak {self.peak_lr:.3g}, decay {share} ({self.decay_text()}) → {self.min_lr:.3g}"
        )


class Power(_Warmup, _Decay[DecayShape]):
    """Power scheduler (Shen et al. 2024, Granite 3.0): lr(n) = min(max_lr, batch * a * n^b), n = tokens seen.

    Followed by a decay over the last `decay_fraction` of the stage, by default exponential.
    """

    type: Literal["power"] = "power"
    a: float = Field(gt=0)
    b: float = Field(lt=0)
    max_lr: LearningRate
    batch_size: int = Field(gt=0, description="β in the paper: sequences per batch.")
    tokens_per_step: Count
    tokens_before: float = Field(0.0, ge=0, description="Tokens already seen when this stage starts.")
    decay_fraction: Fraction = 0.0
    min_lr: LearningRate = 0.0

    @model_validator(mode="after")
    def _check(self) -> Power:
        self._check_decay()
        return self

    def power_lr(self, step: int) -> float:
        tokens = self.tokens_before + (step + 1) * self.tokens_per_step
        return min(self.max_lr, self.batch_size * self.a * math.pow(tokens, self.b))

    def lr_at(self, step: int, total_steps: int, base_lr: float | None = None) -> float:
        warmup = self.warmup_for(total_steps)
        ramp = self._ramp(step, warmup, self.power_lr(warmup))
        if ramp is not None:
            return ramp
        start = total_steps - round(self.decay_fraction * total_steps)
        if step < start or start >= total_steps:
            return self.power_lr(step)
        top = self.power_lr(start)
        factor = decay_factor(
            self.decay, (step - start) / max(total_steps - start, 1), self.half_life_for(total_steps), step - start
        )
        return self.min_lr + (top - self.min_lr) * factor

    def describe(self) -> str:
        tail = f", decay {self.decay_fraction:.0%} ({self.decay_text()})" if self.decay_fraction else ""
        return f"{self.warmup_text()}power min({self.max_lr:.3g}, {self.batch_size}·{self.a:g}·n^{self.b:g}){tail}"


class Phase(Strict):
    fraction: Fraction = Field(gt=0, description="Share of the stage's steps at this LR.")
    lr: LearningRate


class StepWise(_Warmup):
    """Piecewise-constant phases, e.g. DeepSeek-V3's 2.2e-5 for 333B tokens then 7.3e-6 for 167B."""

    type: Literal["step"] = "step"
    phases: list[Phase] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> StepWise:
        total = sum(p.fraction for p in self.phases)
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"phase fractions must sum to 1, found {total:.4f}")
        return self

    def lr_at(self, step: int, total_steps: int, base_lr: float | None = None) -> float:
        ramp = self._ramp(step, self.warmup_for(total_steps), self.phases[0].lr)
        if ramp is not None:
            return ramp
        edge = 0.0
        for phase in self.phases:
            edge += phase.fraction * total_steps
            if step < round(edge):
                return phase.lr
        return self.phases[-1].lr

    def describe(self) -> str:
        parts = ", ".join(f"{p.lr:.3g} for {p.fraction:.1%}" for p in self.phases)
        return f"{self.warmup_text()}step-wise: {parts}"


class FromBase(_Warmup, _Decay[HeldOrDecayShape]):
    """Start at the LR where the base's pre-training left off (`base.lr_at_end`), then decay.

    OLMo 2 stage 2: "linearly decay the learning rate to zero" from the stage-1 checkpoint's LR.
    `decay: none` keeps the base LR constant.
    """

    type: Literal["from_base"] = "from_base"
    end_lr: LearningRate = 0.0

    @model_validator(mode="after")
    def _check(self) -> FromBase:
        if self.decay != "none":
            self._check_decay()
        return self

    def lr_at(self, step: int, total_steps: int, base_lr: float | None = None) -> float:
        if base_lr is None:
            raise ValueError("a from_base schedule needs the base's LR (base.lr_at_end)")
        warmup = self.warmup_for(total_steps)
        ramp = self._ramp(step, warmup, base_lr)
        if ramp is not None:
            return ramp
        if self.decay == "none":
            return base_lr
        progress = (step - warmup) / max(total_steps - warmup, 1)
        factor = decay_factor(self.decay, progress, self.half_life_for(total_steps), step - warmup)
        return self.end_lr + (base_lr - self.end_lr) * factor

    def describe(self) -> str:
        if self.decay == "none":
            return f"{self.warmup_text()}hold the base's LR"
        return f"{self.warmup_text()}from the base's LR, {self.decay_text()} → {self.end_lr:.3g}"


class UnknownSchedule(_Warmup):
    """The paper gives no LR schedule (or no LR). Written `schedule: unknown` or `{type: unknown, shape: cosine}`.

    `plan` fills it with a flagged default, from the LR where the base left off decayed linearly to 0
    (held, for `shape: constant`), and names it in its notes; without `base.lr_at_end` that start is
    the planner's default for the base (also noted). Plots draw the default dashed."""

    type: Literal["unknown"] = "unknown"
    shape: Literal["constant", "linear", "cosine", "wsd", "1-sqrt", "step"] | None = Field(
        None, description="What the paper does say about the shape, if anything."
    )
    note: str | None = None

    def lr_at(self, step: int, total_steps: int, base_lr: float | None = None) -> float:
        """The default a plan fills in; NaN when there is no base LR to start from."""
        if base_lr is None:
            return math.nan
        return self.filled().lr_at(step, total_steps, base_lr)

    def filled(self) -> FromBase:
        return FromBase(decay="none" if self.shape == "constant" else "linear", end_lr=0.0)

    def describe(self) -> str:
        known = f" ({self.shape})" if self.shape else ""
        return f"unknown{known}"


def _unknown_shorthand(value: object) -> object:
    return {"type": "unknown"} if value == "unknown" else value


Schedule = Annotated[
    Constant | Linear | Cosine | WSD | Power | StepWise | FromBase | UnknownSchedule,
    Field(discriminator="type"),
    BeforeValidator(_unknown_shorthand),
]
SCHEDULE_TYPES = ("constant", "linear", "cosine", "wsd", "power", "step", "from_base", "unknown")


def lr_after_warmup(schedule: Schedule, total_steps: int, base_lr: float | None = None) -> float:
    """The LR a stage starts at once any warmup is over (what `diff` and `plan` call "LR at start")."""
    return schedule.lr_at(schedule.warmup_for(total_steps), max(total_steps, 1), base_lr)


def lr_curve(
    schedule: Schedule, total_steps: int, base_lr: float | None = None, points: int | None = None
) -> list[tuple[int, float]]:
    """(step, lr) pairs for printing or plotting; `points` subsamples evenly."""
    if total_steps <= 0:
        return []
    if points is None or points >= total_steps:
        steps = list(range(total_steps))
    else:
        steps = sorted({round(i * (total_steps - 1) / (points - 1)) for i in range(points)})
    return [(s, schedule.lr_at(s, total_steps, base_lr)) for s in steps]
