"""The typed plan contract: dvc.yaml agrees with Layout, plan files round-trip and are validated on read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.catalog import load_catalog
from midtrain.errors import MidtrainError
from midtrain.plan.contract import BuiltinData, Layout, PretrainBase, StandInEval, read_plan_file, write_plan
from midtrain.plan.planner import plan_recipe
from midtrain.plan.request import read_params

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()


def _dvc_stages(layout: Layout) -> dict:
    from ruamel.yaml import YAML

    text = (REPO / "dvc.yaml").read_text().replace("${layout.data}", layout.data).replace("${layout.run}", layout.run)
    return YAML(typ="safe").load(text)["stages"]


def _names(items: list) -> list[str]:
    return [next(iter(i)) if isinstance(i, dict) else i for i in items]


def test_dvc_yaml_paths_are_the_layout_paths() -> None:
    layout = Layout(data="standin-org--name-0123abcd", run="qwen3-8b--org--name-0123abcd")
    stages = _dvc_stages(layout)
    assert "${" not in json.dumps(stages)
    assert _names(stages["plan"]["outs"]) == [layout.plan_dir]
    assert _names(stages["data"]["outs"]) == [layout.data_dir]
    assert _names(stages["base"]["outs"]) == [layout.base_dir]
    assert _names(stages["midtrain"]["outs"]) == [layout.mid_dir]
    assert _names(stages["evaluate"]["metrics"]) == [layout.metrics]
    assert _names(stages["evaluate"]["outs"]) == [layout.position_curve]
    assert _names(stages["report"]["outs"]) == [layout.report_dir]
    for stage, plan_file in (
        ("data", "data"),
        ("base", "base"),
        ("midtrain", "midtrain"),
        ("evaluate", "eval"),
        ("report", "plan"),
    ):
        assert layout.plan_file(plan_file) in stages[stage]["deps"], stage
    assert {layout.base_dir, layout.data_dir} <= set(stages["midtrain"]["deps"])
    assert set(stages["plan"]["params"]) == {"recipe", "scale", "seed", "overrides", "base", "eval", "layout"}


def test_shipped_params_match_the_planned_layout() -> None:
    request = read_params(REPO)
    plan = plan_recipe(CATALOG.get(request.recipe), CATALOG.registry, request.scale)
    assert request.layout == plan.summary.layout.model_dump()


def test_plan_files_round_trip_and_hold_no_placeholders(tmp_path: Path) -> None:
    plan = plan_recipe(CATALOG.get("olmo-2-1124-7b"), CATALOG.registry, "tiny")
    written = write_plan(plan, tmp_path)
    assert set(written) == {"plan", "data", "base", "midtrain", "eval"}
    text = "".join(p.read_text() for p in written.values())
    assert "__DATA__" not in text and "__INIT__" not in text
    assert isinstance(read_plan_file(tmp_path, "data"), BuiltinData)
    assert isinstance(read_plan_file(tmp_path, "base"), PretrainBase)
    assert isinstance(read_plan_file(tmp_path, "eval"), StandInEval)
    mid = read_plan_file(tmp_path, "midtrain")
    layout = plan.summary.layout
    assert mid.runs["anneal-0"].init.path == layout.base_model and mid.final == layout.merge_model("soup")
    assert all(str(r.data) == layout.data_dir and str(r.tokenizer) == layout.tokenizer_dir for r in mid.runs.values())


def test_a_stage_refuses_a_broken_plan_file_with_its_path_and_field(tmp_path: Path) -> None:
    plan = plan_recipe(CATALOG.get("olmo-2-1124-7b"), CATALOG.registry, "tiny")
    write_plan(plan, tmp_path)
    data = json.loads((tmp_path / "midtrain.json").read_text())
    data["runs"]["anneal-0"]["steps"] = -1
    (tmp_path / "midtrain.json").write_text(json.dumps(data))
    with pytest.raises(MidtrainError) as caught:
        read_plan_file(tmp_path, "midtrain")
    assert "midtrain.json" in caught.value.render() and "steps" in caught.value.render()
    with pytest.raises(MidtrainError, match="plan file not found"):
        read_plan_file(tmp_path / "nowhere", "eval")


@pytest.mark.parametrize("recipe_id", sorted(CATALOG.recipes))
def test_printed_stage_plan_agrees_with_the_run_specs(recipe_id: str) -> None:
    for scale in ("tiny", "small", "full"):
        plan = plan_recipe(CATALOG.get(recipe_id), CATALOG.registry, scale)
        for stage in plan.summary.stages:
            for name in stage.runs:
                spec = plan.mid.runs[name]
                assert (spec.steps, spec.sequence_length, spec.global_batch, spec.micro_batch) == (
                    stage.steps,
                    stage.sequence_length,
                    stage.global_batch,
                    stage.micro_batch,
                )
                assert spec.streams == stage.streams
                if spec.rope is not None:
                    assert _rope_text(spec) == stage.rope, (recipe_id, scale, stage.name)
                    scaling = spec.rope.scaling
                    if scaling is not None and getattr(scaling, "original_max_position_embeddings", None):
                        assert f"{scaling.original_max_position_embeddings:,}" in stage.rope
                else:
                    assert stage.rope == "unchanged"
        assert plan.summary.model["max_context"] >= max(s.sequence_length for s in plan.summary.stages)
        base = plan.base.spec if hasattr(plan.base, "spec") else None
        if base is not None:
            assert (
                base.sequence_length == plan.summary.model["base_context"]
                and base.init.vocab_size == plan.summary.model["vocab_size"]
            )


def _rope_text(spec) -> str:  # type: ignore[no-untyped-def]
    return spec.rope.describe(spec.rope.theta) if spec.rope.theta else spec.rope.describe(None)
