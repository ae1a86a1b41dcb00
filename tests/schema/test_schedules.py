"""LR schedules against the formulas the papers print."""

from __future__ import annotations

import math

import pytest
from pydantic import TypeAdapter, ValidationError

from midtrain.schema.schedule import Schedule, decay_factor, lr_after_warmup, lr_curve

adapter = TypeAdapter(Schedule)


def make(**kwargs):  # type: ignore[no-untyped-def]
    return adapter.validate_python(kwargs)


def test_cosine_reproduces_olmo2_stage2_start_lr() -> None:
    # OLMo 2 7B: cosine 3e-4 -> 3e-5 over 5T tokens (Table 3), truncated at 3.895T. The stage-2
    # config starts at 6.1499e-5; the formula gives 6.13e-5 (fact sheet 1a).
    tokens_per_step = 4_194_304
    total = round(5e12 / tokens_per_step)
    step = round(3.895e12 / tokens_per_step)
    cosine = make(type="cosine", peak_lr=3e-4, min_lr=3e-5)
    expected = 3e-5 + 0.5 * 2.7e-4 * (1 + math.cos(math.pi * step / total))
    assert cosine.lr_at(step, total) == pytest.approx(expected, rel=1e-9)
    assert cosine.lr_at(step, total) == pytest.approx(6.15e-5, rel=0.01)


def test_linear_to_zero_from_base() -> None:
    schedule = make(type="from_base", decay="linear", end_lr=0)
    total = 11_921
    assert schedule.lr_at(0, total, base_lr=6.1499e-5) == pytest.approx(6.1499e-5)
    assert schedule.lr_at(total // 2, total, base_lr=6.1499e-5) == pytest.approx(6.1499e-5 * (1 - (total // 2) / total))
    assert schedule.lr_at(total, total, base_lr=6.1499e-5) == 0.0
    with pytest.raises(ValueError, match="base"):
        schedule.lr_at(0, total)


def test_wsd_exponential_half_life_matches_minicpm() -> None:
    # MiniCPM §6.2: f(s - T) = 0.5 ** ((s - T) / 5000 steps) after the stable phase.
    schedule = make(type="wsd", peak_lr=0.01, decay_fraction=0.5, decay="exponential", half_life_steps=5000)
    total = 40_000
    start = 20_000
    assert schedule.lr_at(start - 1, total) == 0.01
    assert schedule.lr_at(start, total) == pytest.approx(0.01)
    assert schedule.lr_at(start + 5000, total) == pytest.approx(0.005)
    assert schedule.lr_at(start + 15_000, total) == pytest.approx(0.01 / 8)


@pytest.mark.parametrize(
    ("shape", "x", "expected"),
    [("linear", 0.25, 0.75), ("cosine", 0.5, 0.5), ("1-sqrt", 0.25, 0.5), ("cosine", 1.0, 0.0), ("1-sqrt", 1.0, 0.0)],
)
def test_decay_shapes(shape: str, x: float, expected: float) -> None:
    assert decay_factor(shape, x) == pytest.approx(expected)


def test_wsd_warmup_stable_decay_boundaries() -> None:
    schedule = make(type="wsd", peak_lr=1e-3, min_lr=1e-4, warmup_steps=10, decay_fraction=0.2, decay="linear")
    total = 100
    assert schedule.lr_at(0, total) == pytest.approx(1e-4)  # (0 + 1) / 10 of peak
    assert schedule.lr_at(9, total) == pytest.approx(1e-3)
    assert schedule.lr_at(50, total) == 1e-3
    assert schedule.lr_at(80, total) == pytest.approx(1e-3)
    assert schedule.lr_at(90, total) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert schedule.lr_at(100, total) == pytest.approx(1e-4)


def test_stepwise_reproduces_deepseek_v3_tail() -> None:
    # DeepSeek-V3 §4.2: 2.2e-5 for the first 333B of the last 500B tokens, then 7.3e-6.
    schedule = make(type="step", phases=[{"fraction": 0.666, "lr": 2.2e-5}, {"fraction": 0.334, "lr": 7.3e-6}])
    total = 1000
    assert schedule.lr_at(0, total) == 2.2e-5
    assert schedule.lr_at(665, total) == 2.2e-5
    assert schedule.lr_at(666, total) == 7.3e-6
    assert schedule.lr_at(999, total) == 7.3e-6


def test_power_scheduler_matches_granite_formula() -> None:
    # Power scheduler Eq. 7 with a=4, b=-0.51, batch 1024: at 10T tokens lr ≈ 9.6e-4 (fact sheet 11).
    tokens_per_step = 1024 * 4096
    schedule = make(
        type="power",
        a=4,
        b=-0.51,
        max_lr=0.02,
        batch_size=1024,
        tokens_per_step=tokens_per_step,
        tokens_before=1e13 - tokens_per_step,
    )
    assert schedule.lr_at(0, 10) == pytest.approx(1024 * 4 * (1e13) ** -0.51, rel=1e-9)
    assert schedule.lr_at(0, 10) == pytest.approx(9.6e-4, rel=0.02)
    early = make(type="power", a=4, b=-0.51, max_lr=0.02, batch_size=1024, tokens_per_step=tokens_per_step)
    assert early.lr_at(0, 10) == 0.02  # capped at max_lr early on


def test_power_exponential_decay_tail() -> None:
    schedule = make(
        type="power",
        a=4,
        b=-0.51,
        max_lr=0.02,
        batch_size=1024,
        tokens_per_step=4e6,
        tokens_before=1e12,
        decay_fraction=0.5,
        decay="exponential",
        half_life_fraction=0.1,
    )
    top = schedule.power_lr(50)
    assert schedule.lr_at(50, 100) == pytest.approx(top)
    assert schedule.lr_at(60, 100) == pytest.approx(top / 2)


def test_lr_curve_and_after_warmup() -> None:
    schedule = make(type="constant", lr=2e-4, warmup_fraction=0.1)
    curve = lr_curve(schedule, 100, points=11)
    assert len(curve) == 11 and curve[0][0] == 0 and curve[-1][0] == 99
    assert lr_after_warmup(schedule, 100) == 2e-4


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "wsd", "peak_lr": 1e-3},  # no decay length
        {"type": "wsd", "peak_lr": 1e-3, "decay_fraction": 0.1, "decay": "exponential"},  # no half-life
        {"type": "wsd", "peak_lr": 1e-3, "decay_fraction": 0.1, "half_life_steps": 10},  # half-life on linear
        {"type": "constant", "lr": 1e-3, "warmup_steps": 10, "warmup_fraction": 0.1},
        {"type": "step", "phases": [{"fraction": 0.5, "lr": 1e-4}]},  # does not sum to 1
        {"type": "cosine", "peak_lr": -1},
        {"type": "cosine", "peak_lr": 5},  # an LR above 1 is a typo
        {"type": "triangle", "lr": 1e-3},
    ],
)
def test_invalid_schedules(bad: dict) -> None:
    with pytest.raises(ValidationError):
        adapter.validate_python(bad)
