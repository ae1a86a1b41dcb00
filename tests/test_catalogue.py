"""The whole catalogue: it validates, meets the provenance goals, plans and trains at tiny scale, publishes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from midtrain.catalog import load_catalog
from midtrain.plan.planner import plan_recipe
from midtrain.summary import coverage

REPO = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(REPO)
IDS = sorted(CATALOG.recipes)


def test_catalogue_size_and_provenance_goals() -> None:
    assert len(IDS) >= 40
    assert len({CATALOG.get(i).organization for i in IDS}) >= 22
    covs = [coverage(CATALOG.get(i)) for i in IDS]
    numbers = sum(c["numbers"] for c in covs)
    assert sum(c["tagged"] * c["numbers"] for c in covs) / numbers >= 0.97
    assert sum(c["stated"] * c["numbers"] for c in covs) / numbers >= 0.82


@pytest.mark.parametrize("recipe_id", IDS)
def test_every_recipe_plans_at_every_scale(recipe_id: str) -> None:
    for scale in ("tiny", "small", "full"):
        plan = plan_recipe(CATALOG.get(recipe_id), CATALOG.registry, scale)
        assert plan.stages and plan.mid.runs and plan.summary.final
        for stage in plan.stages:
            assert stage.steps >= 1 and stage.global_batch >= 1 and abs(sum(stage.streams.values()) - 1) < 1e-6


@pytest.mark.parametrize("recipe_id", IDS)
def test_every_stage_of_every_recipe_trains_a_few_steps_at_tiny_scale(
    recipe_id: str, prepared: Path, tmp_path: Path
) -> None:
    """Each stage's first run, shrunk to 2 steps of a small stand-in, from the previous stage's output."""
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train

    plan = plan_recipe(CATALOG.get(recipe_id), CATALOG.registry, "tiny")
    dims = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 64,
    }
    base = plan.base.spec.model_dump(mode="json")
    if base["init"].get("layer_types") or any(plan.mid.runs[s.runs[0]].upscale for s in plan.stages):
        dims["num_hidden_layers"] = base["init"]["dims"]["num_hidden_layers"]  # the layouts are planned for this depth
    base.update(data=str(prepared), tokenizer=str(prepared / "tokenizer"))
    scale_down = {"steps": 2, "checkpoint_every": 2, "threads": 1, "precision": "fp32"}
    base.update(scale_down, out=str(tmp_path / "base"), init={**base["init"], "dims": dims, "vocab_size": 512})
    base["sequence_length"] = min(base["sequence_length"], 64)
    base["global_batch"], base["micro_batch"] = 2, 2
    train(RunSpec.model_validate(base), progress=False)
    previous = tmp_path / "base" / "model"
    for stage in plan.stages:
        spec = plan.mid.runs[stage.runs[0]].model_dump(mode="json")
        spec.update(
            scale_down,
            data=str(prepared),
            tokenizer=str(prepared / "tokenizer"),
            out=str(tmp_path / stage.runs[0]),
            init={"path": str(previous)},
        )
        factor = spec["sequence_length"] / 64 if spec["sequence_length"] > 256 else 1
        spec["sequence_length"] = max(8, int(spec["sequence_length"] / factor))
        if ((spec.get("rope") or {}).get("scaling") or {}).get("original_max_position_embeddings"):
            spec["rope"]["scaling"]["original_max_position_embeddings"] = max(
                4, int(spec["rope"]["scaling"]["original_max_position_embeddings"] / factor)
            )
        spec["max_position_embeddings"] = max(spec["sequence_length"], 64)
        spec["global_batch"], spec["micro_batch"] = 2, 1
        spec.pop("polyak", None)
        spec.update(save_at=[], batch_ramp=[])  # both are steps of the planned run, which is cut to 2 here
        if spec.get("optimizer_from"):
            spec["optimizer_from"] = str(previous.parent)  # carry over from the run this one starts from
        summary = train(RunSpec.model_validate(spec), progress=False)
        assert summary["steps"] == 2 and summary["final_loss"] == summary["final_loss"]  # not NaN
        previous = tmp_path / stage.runs[0] / "model"


def test_docs_catalog_is_current() -> None:
    from midtrain.publish import catalog_markdown

    stored = (REPO / "docs" / "catalog.md").read_text()
    assert stored == catalog_markdown(CATALOG), (
        "docs/catalog.md is stale: run `midtrain catalog markdown --out docs/catalog.md`"
    )


def test_static_site(tmp_path: Path) -> None:
    """index.html and recipe pages: results, contradictions, notes, an LR plot with axes and labelled stages, all text escaped."""
    from midtrain.publish import build_site

    build_site(CATALOG, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count("<tr data-objectives=") == len(IDS) and "id=q" in index and "id=objective" in index
    page = (tmp_path / "site" / "olmo-2-1124-7b.html").read_text()
    assert (
        "<svg class=lr" in page
        and "dolmino-math" in page
        and "Table 13" in page
        and page.count("<h3 class=stage>") == 1
    )
    links = set(re.findall(r"href='([a-z0-9.\-]+\.html)'", index))
    assert links == {f"{i}.html" for i in IDS} and all((tmp_path / "site" / link).exists() for link in links)
    olmo = CATALOG.get("olmo-2-1124-7b")
    assert (
        page.count("<tr class=result") == len(olmo.results) == 6
        and page.count("<div class=contradiction>") == len(olmo.contradictions) == 2
    )
    assert "<p class=notes>" in page and page.count("<p class=stage-description>") == 1 and "class=resolution" in page
    v3 = (tmp_path / "site" / "deepseek-v3.html").read_text()
    assert v3.count("class=stage-label") == v3.count("class=stage-boundary") == v3.count("class=lr-stage") == 3
    assert v3.count("class=y-tick") >= 3 and v3.count('class="x-tick') >= 4

    # A stage whose LR cannot be known is drawn as unknown, not guessed; recipe text never becomes markup.
    from midtrain.publish import recipe_page
    from midtrain.schema.provenance import Contradiction
    from midtrain.schema.recipe import Result

    # internlm2-7b: stage 1 is from_base and stage 2's schedule is `unknown`; without the base LR both
    # stages' LR cannot be known (with it, stage 2 is drawn as plan's default, dashed)
    internlm = CATALOG.get("internlm2-7b")
    assert [s.schedule.type for s in internlm.stages] == ["from_base", "unknown"]
    unknown = recipe_page(
        internlm.model_copy(update={"base": internlm.base.model_copy(update={"lr_at_end": None})}), CATALOG.registry
    )
    assert unknown.count("class=lr-unknown ") == 2 and unknown.count("class=lr-stage") == len(internlm.stages) - 2
    assert "LR unknown" in unknown and unknown.count("class=stage-label") == len(internlm.stages)

    evil = "<script>alert(1)</script>"
    hostile = olmo.model_copy(
        update={
            "notes": evil,
            "source": olmo.source.model_copy(
                update={"url": "javascript:alert(1)", "title": "<img src=x onerror=alert(1)>"}
            ),
            "stages": [olmo.stages[0].model_copy(update={"description": evil})],
            "results": [Result(benchmark=evil, before=1, after=2, where="<b>x</b>", note="' onmouseover='alert(1)")],
            "contradictions": [Contradiction(about=["<i>"], sources=[evil, "b"], choice="<svg onload=alert(1)>")],
        }
    )
    page = recipe_page(hostile, CATALOG.registry)
    for markup in ("<script>alert", "<img src", "<svg onload", "<b>x", "<i>", "javascript:", "' onmouseover"):
        assert markup not in page, markup
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4  # notes, stage description, result, contradiction
