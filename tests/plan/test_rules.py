"""Each scaling rule of midtrain/plan/rules.py against the arithmetic it promises."""

from __future__ import annotations

import pytest

from midtrain.catalog import load_catalog
from midtrain.errors import MidtrainError
from midtrain.plan import rules

CATALOG = load_catalog()


def test_reference_lr_is_the_base_peak_else_ten_times_its_end() -> None:
    olmo = CATALOG.get("olmo-2-1124-7b")
    assert olmo.base.peak_lr and rules.recipe_reference_lr(olmo) == olmo.base.peak_lr
    no_peak = olmo.model_copy(update={"base": olmo.base.model_copy(update={"peak_lr": None})})
    assert rules.recipe_reference_lr(no_peak) == pytest.approx(olmo.base.lr_at_end * 10)


def test_base_end_lr_keeps_the_end_to_peak_ratio() -> None:
    olmo = CATALOG.get("olmo-2-1124-7b")
    end, note = rules.base_end_lr(olmo, 3e-3, 3e-3 / olmo.base.peak_lr)
    assert note is None and end == pytest.approx(3e-3 * olmo.base.lr_at_end / olmo.base.peak_lr)
    silent = olmo.model_copy(update={"base": olmo.base.model_copy(update={"peak_lr": None, "lr_at_end": None})})
    end, note = rules.base_end_lr(silent, 1e-3, 1.0)
    assert end == pytest.approx(1e-4) and note and "10%" in note


def test_context_mapping_keeps_the_extension_ratio_and_shrinks_to_fit() -> None:
    qwen = CATALOG.get("qwen3-8b")  # 4,096 -> 32,768: 8x
    base, factor, note = rules.context_mapping(qwen, 64, None)
    assert base == 64 and factor * qwen.final_context() == 512 and note is None
    base, factor, note = rules.context_mapping(qwen, 128, 512)
    assert base == 64 and note and "8× extension" in note
    with pytest.raises(MidtrainError, match="cannot hold|too little|extension"):
        rules.context_mapping(qwen, 128, 64)


def test_batch_fits_and_micro_batch_divides_it() -> None:
    assert rules.fit_batch(4096, 64, 1024) == (64, 16)
    global_batch, micro = rules.fit_batch(15_000, 64, 8192)
    assert global_batch == 234 and global_batch % micro == 0 and micro <= 128
    assert rules.fit_batch(10, 64, None) == (1, 1)  # never below one sequence


def test_tokens_per_step_keep_the_recipe_batch_when_the_budget_allows() -> None:
    assert rules.tokens_per_step_for_budget(4_194_304, 50e9, 4096, 20) == 4_194_304
    assert rules.tokens_per_step_for_budget(4_194_304, 300_000, 64, 20) == 15_000
    assert rules.tokens_per_step_for_budget(4_194_304, 100, 64, 20) == 64


def test_steps_and_stage_shares() -> None:
    assert rules.steps_for(300_000, 234, 64) == 20
    qwen = CATALOG.get("qwen3-8b")
    shares = rules.stage_token_shares(qwen)
    assert sum(shares) == pytest.approx(1.0)
    tokens = [s.total_tokens() for s in qwen.stages]
    assert shares[1] == pytest.approx(tokens[1] / sum(tokens))


def test_schedule_lrs_scale_and_steps_become_fractions() -> None:
    from midtrain.schema.schedule import WSD

    wsd = WSD(type="wsd", peak_lr=1e-3, min_lr=1e-4, warmup_steps=100, decay_steps=250)
    scaled = rules.scale_schedule(wsd, 0.5, 1000, 1e-6, 2048)
    assert scaled["peak_lr"] == pytest.approx(5e-4) and scaled["min_lr"] == pytest.approx(5e-5)
    assert scaled["warmup_fraction"] == pytest.approx(0.1) and scaled["decay_fraction"] == pytest.approx(0.25)
    assert "warmup_steps" not in scaled


def test_power_schedule_keeps_its_curve_under_fewer_tokens() -> None:
    stage = next((s for r in CATALOG.all() for s in r.stages if s.schedule.type == "power"), None)
    if stage is None:
        pytest.skip("no recipe uses the power schedule")
    data = stage.schedule.model_dump(mode="json")
    scaled = rules.scale_schedule(stage.schedule, 2.0, 1000, 1e-3, 4096)
    assert scaled["a"] == pytest.approx(data["a"] * 2.0 * 1e-3 ** (-data["b"]))
    assert scaled["tokens_per_step"] == 4096


def test_rope_theta_keeps_its_ratio_to_the_base_theta_and_lengths_move() -> None:
    qwen = CATALOG.get("qwen3-8b")
    rope = next(s.rope for s in qwen.stages if s.rope)
    scaled = rules.scale_rope(rope, 64 / 4096, 10_000 / 10_000)
    assert scaled["theta"] == pytest.approx(1_000_000)
    scaled = rules.scale_rope(rope, 64 / 4096, 500_000 / 10_000)  # a base whose own θ is 500K
    assert scaled["theta"] == pytest.approx(50_000_000)
    yarn = next(
        (
            s.rope
            for r in CATALOG.all()
            for s in r.stages
            if s.rope and s.rope.scaling and getattr(s.rope.scaling, "original_max_position_embeddings", None)
        ),
        None,
    )
    assert yarn is not None
    scaled = rules.scale_rope(yarn, 0.5, 1.0)
    original = yarn.scaling.original_max_position_embeddings
    assert scaled["scaling"]["original_max_position_embeddings"] == max(round(original * 0.5), rules.MIN_SEQUENCE)
    assert rules.scale_rope(None, 1.0, 1.0) is None
