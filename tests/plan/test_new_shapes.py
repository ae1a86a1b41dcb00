"""Every shape schema_version 2 added is used by a catalogue recipe and planned at the tiny scale:
unknown values, reported values and errata, branches (also from the middle of a stage), optimizer-state
carry-over, depth up-scaling, batch and mixture ramps, fill-in-the-middle, µP/Muon/QK-Clip/AdEMAMix,
NTK-alpha and per-layer attention."""

from __future__ import annotations

import math
from typing import Any

import pytest

from midtrain.catalog import load_catalog
from midtrain.errors import MidtrainError
from midtrain.plan.planner import plan_recipe
from midtrain.schema.migrate import migrate
from midtrain.schema.recipe import Recipe

CATALOG = load_catalog()


def _tiny(recipe_id: str) -> Any:
    return plan_recipe(CATALOG.get(recipe_id), CATALOG.registry, "tiny")


def _variant(recipe_id: str, change: Any) -> Recipe:
    """A catalogue recipe changed on its plain data and validated again."""
    data = CATALOG.get(recipe_id).model_dump(mode="json", exclude_none=True)
    change(data)
    return Recipe.model_validate(data)


def test_unknown_schedule_is_filled_with_a_flagged_default() -> None:
    recipe = CATALOG.get("hunyuan-large")
    assert recipe.unknowns() == ["stages[ctx-32k].schedule", "stages[ctx-256k].schedule"]
    plan = _tiny("hunyuan-large")
    spec = plan.mid.runs["ctx-32k"]
    assert spec.schedule.type == "from_base" and spec.schedule.decay == "linear" and spec.base_lr
    assert any(
        "stages[ctx-32k].schedule is unknown" in note and "not the paper's" in note for note in plan.summary.notes
    )


def test_unknown_budget_is_refused_with_the_option_that_fixes_it() -> None:
    def unknown_tokens(data: dict[str, Any]) -> None:
        data["stages"][1]["tokens"] = "unknown"

    recipe = _variant("hunyuan-large", unknown_tokens)
    assert recipe.stages[1].total_tokens() is None and "stages[ctx-32k].tokens" in recipe.unknowns()
    with pytest.raises(MidtrainError) as info:
        plan_recipe(recipe, CATALOG.registry, "tiny")
    problem = info.value.problems[0]
    assert (
        "stages[ctx-32k].tokens" in problem.message
        and problem.expected
        and "--set stages.ctx-32k.tokens=" in problem.expected
    )


def test_unknown_batch_plans_with_a_note() -> None:
    def unknown_batch(data: dict[str, Any]) -> None:
        data["stages"][0]["batch"] = "unknown"
        data["provenance"] = {k: v for k, v in data["provenance"].items() if ".batch" not in k}

    recipe = _variant("olmo-2-1124-7b", unknown_batch)
    assert recipe.stages[0].known_batch is None and recipe.stages[0].tokens_per_step() is None
    plan = plan_recipe(recipe, CATALOG.registry, "tiny")
    assert plan.mid.runs["anneal-0"].steps >= 1


def test_reported_values_and_revisions_are_kept_beside_the_used_ones() -> None:
    nemotron = CATALOG.get("nemotron-nano-2")
    reported = {r.path: r.value for r in nemotron.reported}
    assert reported["stages[decay-phase2].batch.sequences"] == 768
    assert nemotron.stage("decay-phase2").known_batch.sequences == 736  # type: ignore[union-attr]
    olmo = CATALOG.get("olmo-3-32b")
    (revision,) = olmo.revisions
    assert revision.new == pytest.approx(2.071235285e-4) and revision.old == pytest.approx(2 * revision.new)
    assert olmo.stage("midtrain").schedule.start_lr == pytest.approx(2.0712e-4, rel=1e-4)  # type: ignore[union-attr]
    _tiny("nemotron-nano-2")
    _tiny("olmo-3-32b")


def test_a_reported_path_must_name_a_field() -> None:
    def bad_path(data: dict[str, Any]) -> None:
        data["reported"][0]["path"] = "stages[nope].batch.sequences"

    with pytest.raises(ValueError, match="stages\\[nope\\].batch.sequences"):
        _variant("nemotron-nano-2", bad_path)


def test_branches_are_left_out_of_totals_and_do_not_become_previous() -> None:
    recipe = CATALOG.get("octothinker-llama-3.2-3b")
    stable, long_branch = recipe.stage("stable"), recipe.stage("decay-long")
    assert [s.name for s in recipe.stages if s.branch] == ["decay-short", "decay-hybrid"]
    assert recipe.mid_training_tokens() == pytest.approx(stable.total_tokens() + long_branch.total_tokens())  # type: ignore[operator]
    assert recipe.branch_tokens() == pytest.approx(2 * long_branch.total_tokens())  # type: ignore[operator]
    assert recipe.final_name() == "decay-long"
    plan = _tiny("octothinker-llama-3.2-3b")
    assert [s.name for s in plan.summary.stages if s.branch] == ["decay-short", "decay-hybrid"]
    assert plan.mid.final.endswith("decay-long/model")


def test_previous_skips_a_side_branch() -> None:
    def add_tail(data: dict[str, Any]) -> None:
        tail = dict(data["stages"][1], name="tail", init="previous", branch=False)
        data["stages"].append(tail)
        data["final"] = "tail"

    recipe = _variant("octothinker-llama-3.2-3b", add_tail)
    assert recipe.init_of(len(recipe.stages) - 1) == "decay-long"
    plan = plan_recipe(recipe, CATALOG.registry, "tiny")
    assert plan.mid.runs["tail"].init.path.endswith("/decay-long/model")  # type: ignore[union-attr]


def test_a_branch_from_the_middle_of_a_stage_starts_from_a_snapshot() -> None:
    recipe = CATALOG.get("smollm2-1.7b")
    decay, branch = recipe.stage("decay"), recipe.stage("context-8k")
    assert branch.init == "decay" and branch.init_at and branch.init_at.tokens
    fraction = branch.init_at.tokens / decay.total_tokens()  # type: ignore[operator]
    plan = _tiny("smollm2-1.7b")
    parent = plan.mid.runs["decay"]
    (step,) = parent.save_at
    assert step == round(fraction * parent.steps)
    assert plan.mid.runs["context-8k"].init.path.endswith(f"decay/at-step-{step}/model")  # type: ignore[union-attr]


def test_a_branch_point_must_lie_inside_its_stage() -> None:
    def too_late(data: dict[str, Any]) -> None:
        data["stages"][1]["init_at"] = {"tokens": 2e12}

    with pytest.raises(ValueError, match="branch point"):
        _variant("smollm2-1.7b", too_late)


def test_optimizer_state_carry_points_at_the_run_it_continues() -> None:
    plan = _tiny("olmo-3-7b")
    assert plan.mid.runs["midtrain"].optimizer_from == plan.summary.layout.base_dir
    assert plan.mid.runs["long-context"].optimizer_from == plan.summary.layout.run_dir("midtrain")
    smol = _tiny("smollm3-3b")
    assert smol.mid.runs["lc-64k"].optimizer_from is None  # reset


def test_depth_upscaling_maps_the_layer_ranges_onto_the_stand_in() -> None:
    recipe = CATALOG.get("longcat-flash")
    upscale = recipe.stage("general").upscale
    assert upscale and upscale.to_layers == 28
    plan = _tiny("longcat-flash")
    layers = plan.base.spec.init.dims.num_hidden_layers  # type: ignore[union-attr]
    assert plan.mid.runs["general"].upscale == [(0, layers), (0, layers)]
    assert not plan.mid.runs["reasoning-coding"].upscale


def test_batch_ramp_keeps_the_token_budget_and_the_ratio() -> None:
    def ramp(data: dict[str, Any]) -> None:
        stage = data["stages"][0]
        stage["batch"] = {"sequences": 512, "ramp": [{"sequences": 1024, "after_tokens": stage["tokens"] / 2}]}
        stage.pop("steps", None)
        data["provenance"] = {k: v for k, v in data["provenance"].items() if ".batch" not in k and ".steps" not in k}

    recipe = _variant("olmo-2-1124-7b", ramp)
    stage = recipe.stages[0]
    assert stage.total_steps() == round(
        stage.total_tokens() / 2 / (512 * 4096) + stage.total_tokens() / 2 / (1024 * 4096)
    )  # type: ignore[operator]
    flat = plan_recipe(CATALOG.get("olmo-2-1124-7b"), CATALOG.registry, "tiny").mid.runs["anneal-0"]
    spec = plan_recipe(recipe, CATALOG.registry, "tiny").mid.runs["anneal-0"]
    (phase,) = spec.batch_ramp
    assert phase.global_batch == 2 * spec.global_batch
    tokens = (phase.step * spec.global_batch + (spec.steps - phase.step) * phase.global_batch) * spec.sequence_length
    assert tokens == pytest.approx(flat.steps * flat.global_batch * flat.sequence_length, rel=0.05)


def test_a_batch_ramp_triggered_in_words_is_placed_and_noted() -> None:
    def plateau(data: dict[str, Any]) -> None:
        data["stages"][0]["batch"] = {"sequences": 512, "ramp": [{"sequences": 1024, "when": "the loss plateaus"}]}
        data["stages"][0].pop("steps", None)
        data["provenance"] = {k: v for k, v in data["provenance"].items() if ".batch" not in k and ".steps" not in k}

    recipe = _variant("olmo-2-1124-7b", plateau)
    assert recipe.stages[0].batch_phases() is None
    plan = plan_recipe(recipe, CATALOG.registry, "tiny")
    assert plan.mid.runs["anneal-0"].batch_ramp
    assert any("the loss plateaus" in note for note in plan.summary.notes)


def test_mixture_ramp_gives_end_shares_to_the_data_path() -> None:
    def ramp(data: dict[str, Any]) -> None:
        components = data["stages"][0]["mixture"]["components"]
        for component in components:
            component["share_end"] = component["share"]
        components[0]["share_end"] = components[0]["share"] + components[1]["share"]
        components[1]["share_end"] = 0.0

    recipe = _variant("olmo-2-1124-7b", ramp)
    assert recipe.stages[0].mixture.is_ramped()
    spec = plan_recipe(recipe, CATALOG.registry, "tiny").mid.runs["anneal-0"]
    assert spec.streams_end and set(spec.streams_end) == set(spec.streams)
    assert math.isclose(sum(spec.streams_end.values()), 1.0)


def test_fim_settings_reach_the_data_path_with_the_stand_in_sentinels() -> None:
    recipe = CATALOG.get("deepseek-v3")
    fim = recipe.stage("lr-tail").fim
    assert fim and fim.rate == 0.1 and fim.tokens and fim.tokens.prefix == "<|fim_begin|>"

    def code_source(data: dict[str, Any]) -> None:
        data["stages"][0]["fim"]["applies_to"] = [data["stages"][0]["mixture"]["components"][0]["source"]]

    plan = plan_recipe(_variant("deepseek-v3", code_source), CATALOG.registry, "tiny")
    spec = plan.mid.runs["lr-tail"]
    assert spec.fim and spec.fim.rate == 0.1 and spec.fim.prefix == "<|fim_prefix|>" and spec.fim.streams
    assert any("in place of the recipe's <|fim_begin|>" in note for note in plan.summary.notes)


def test_fim_rate_of_version_1_migrates_with_its_provenance() -> None:
    data = {
        "schema_version": 1,
        "stages": [{"name": "a", "fim_rate": 0.5}, {"name": "b"}],
        "provenance": {"stages[a].fim_rate": "stated: §3"},
    }
    out, steps = migrate(data)
    assert steps == [1] and out["schema_version"] == 2
    assert out["stages"][0] == {"name": "a", "fim": {"rate": 0.5}} and out["stages"][1] == {"name": "b"}
    assert out["provenance"] == {"stages[a].fim.rate": "stated: §3"}


def test_optimizer_variants_are_recorded_and_planned() -> None:
    kimi = CATALOG.get("kimi-k2").optimizer
    assert kimi.type == "muon" and kimi.muon and kimi.muon.rms_match == 0.2 and kimi.qk_clip and kimi.qk_clip.tau == 100
    minicpm = CATALOG.get("minicpm-2b").optimizer
    assert minicpm.mup and minicpm.mup.base_width == 256 and minicpm.mup.multipliers["scale_emb"] == 12
    apertus = CATALOG.get("apertus-8b").optimizer
    assert apertus.type == "ademamix" and apertus.ademamix and apertus.ademamix.alpha == 8
    kimi_plan = _tiny("kimi-k2")
    spec = kimi_plan.mid.runs[kimi_plan.summary.stages[0].runs[0]]
    assert spec.optimizer.type == "muon" and spec.optimizer.qk_clip is None  # the trainer cannot apply QK-Clip
    assert any("QK-Clip is recorded but not applied" in note for note in kimi_plan.summary.notes)
    for recipe_id in ("kimi-k2", "glm-4.5", "minicpm-2b", "apertus-8b"):
        plan = _tiny(recipe_id)
        assert plan.mid.runs[plan.summary.stages[0].runs[0]].optimizer.type in ("adamw", "adam", "muon", "ademamix")


def test_ntk_alpha_becomes_a_base_change_at_the_model_head_dim() -> None:
    from midtrain.schema.rope import Rope

    rope = Rope.model_validate({"scaling": {"type": "ntk-alpha", "alpha": 1000}})
    assert rope.to_hf(10_000.0, 128) == {
        "rope_type": "default",
        "rope_theta": pytest.approx(10_000 * 1000 ** (128 / 126)),
    }
    assert rope.capacity(4096) is None
    plan = _tiny("hunyuan-large")
    assert plan.mid.runs["ctx-256k"].rope.scaling.type == "ntk-alpha"  # type: ignore[union-attr]


def test_attention_layouts_reach_the_stand_in() -> None:
    olmo = _tiny("olmo-3-7b").base.spec.init  # type: ignore[union-attr]
    assert olmo.layer_types == ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]
    assert olmo.sliding_window and olmo.sliding_window < 4096
    smol = _tiny("smollm3-3b").base.spec.init  # type: ignore[union-attr]
    assert smol.no_rope_layers == [1, 1, 1, 0] and str(smol.family.value) == "smollm3"


def test_intermediate_results_name_their_checkpoint() -> None:
    recipe = CATALOG.get("olmo-3-7b")
    inside = [r for r in recipe.results if r.at is not None]
    assert inside and all(r.at and r.at.stage == "midtrain" for r in inside)
    assert recipe.final_name() != "midtrain"  # the checkpoint is part-way through the recipe

    def bad_stage(data: dict[str, Any]) -> None:
        next(r for r in data["results"] if r.get("at"))["at"]["stage"] = "stage-9"

    with pytest.raises(ValueError, match="'stage-9' is not a stage"):
        _variant("olmo-3-7b", bad_stage)
