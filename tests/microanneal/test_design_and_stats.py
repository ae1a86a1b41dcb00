"""Microanneal: option checks, arm expansion, unit specs and the statistics (no training)."""

from __future__ import annotations

import pytest

from midtrain.catalog import load_catalog
from midtrain.errors import MidtrainError
from midtrain.microanneal import stats
from midtrain.microanneal.data import ANSWER, noisy_math, wrong_answer
from midtrain.microanneal.design import MicroRequest, expand, parse_mix, parse_swaps, unit_names


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    return load_catalog()


def request(**fields):  # type: ignore[no-untyped-def]
    fields.setdefault("candidates", ["math"])
    return MicroRequest(**fields)


def test_mixture_arms_blend_the_control_with_each_candidate(catalog) -> None:  # type: ignore[no-untyped-def]
    design = expand(request(control=parse_mix("prose:0.8,code:0.2"), candidates=["math", "code"], share=0.3), catalog)
    assert list(design.arms) == ["control", "math", "code"]
    assert design.arms["math"].sources == pytest.approx({"prose": 0.56, "code": 0.14, "math": 0.3})
    assert design.arms["code"].streams == pytest.approx({"prose.train": 0.56, "code.train": 0.44})
    assert design.units() == unit_names(["control", "math", "code"], 2)


def test_default_control_is_the_stand_in_base_mix(catalog) -> None:  # type: ignore[no-untyped-def]
    design = expand(request(candidates=["math-noisy"]), catalog)
    assert design.arms["control"].sources == {"prose": 0.8, "code": 0.15, "math": 0.05}
    assert design.noisy and design.registry_sources == []


@pytest.mark.parametrize(
    ("fields", "option", "words"),
    [
        ({"candidates": ["maths"]}, "--candidate", "did you mean math"),
        ({"control": {"prose": 1.0}, "candidates": ["prose"]}, "--candidate", "is the control itself"),
        ({"share": 1.2}, "--share", "(0, 1)"),
        ({"share": 0.0}, "--share", "(0, 1)"),
        ({"seeds": 0}, "--seeds", "at least 1"),
        ({"candidates": []}, "--candidate", "at least one candidate"),
        ({"candidates": ["math", "math"]}, "--candidate", "twice"),
        ({"control": {"webtext": 1.0}}, "--control", "unknown source"),
    ],
)
def test_bad_requests_name_the_option(catalog, fields, option, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MidtrainError) as info:
        expand(request(**fields), catalog)
    text = str(info.value)
    assert option in text and words in text


@pytest.mark.parametrize(
    ("text", "words"),
    [("prose:0.8,code:0.4", "sum to 1"), ("prose:1.5", "out of range"), ("prose:x", "not a number"), ("", "empty")],
)
def test_bad_mixes(text: str, words: str) -> None:
    with pytest.raises(MidtrainError, match=words):
        parse_mix(text)


def test_recipe_form_swaps_one_source(catalog) -> None:  # type: ignore[no-untyped-def]
    design = expand(MicroRequest(recipe="olmo-2-1124-7b", swap=parse_swaps(["dolmino-math=code"])), catalog)
    control, arm = design.arms["control"].sources, design.arms["code"].sources
    assert "dolmino-math" in control and "dolmino-math" not in arm
    assert arm["code"] == pytest.approx(control["dolmino-math"])
    assert design.arms["control"].streams["math.train"] == pytest.approx(control["dolmino-math"])
    with pytest.raises(MidtrainError, match="not a source of"):
        expand(MicroRequest(swap={"dolmino-nope": "math"}), catalog)
    with pytest.raises(MidtrainError, match="--swap only"):
        expand(MicroRequest(swap={"dolmino-math": "math"}, candidates=["code"]), catalog)
    with pytest.raises(MidtrainError, match="RECIPE_SOURCE=CANDIDATE"):
        parse_swaps(["dolmino-math"])


def test_too_few_tokens_is_an_error(catalog, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from midtrain.microanneal.plan import plan_design

    with pytest.raises(MidtrainError, match="too few") as info:
        plan_design(request(tokens=1000), catalog, tmp_path, resolve=False)
    assert "--tokens" in str(info.value)
    _design, plan, summary = plan_design(request(tokens=40_000), catalog, tmp_path, resolve=False)
    assert summary.steps >= 20 and summary.tokens_per_unit >= 20 * summary.sequence_length
    assert summary.linear_start == pytest.approx(plan.summary.base.lr_end)


def test_math_noisy_keeps_the_steps_and_breaks_the_answer() -> None:
    rows = [
        {"id": f"m{i}", "text": f"Problem: p{i}\nSolution:\nStep 1: 2 + {i} = {2 + i}.\nAnswer: {2 + i}"}
        for i in range(50)
    ]
    noisy = list(noisy_math(iter(rows), seed=0))
    assert len(noisy) == 50
    for row, (_, text) in zip(rows, noisy):
        right = int(ANSWER.search(row["text"]).group(1))  # type: ignore[union-attr]
        wrong = int(ANSWER.search(text).group(1))  # type: ignore[union-attr]
        assert wrong != right
        assert text.rsplit("\nAnswer:", 1)[0] == row["text"].rsplit("\nAnswer:", 1)[0]
    assert wrong_answer(18) == -18 and wrong_answer(0) == -1


def scores(values: dict[str, list[float]], metric: str = "math") -> list[dict]:  # type: ignore[type-arg]
    return [
        {"arm": arm, "seed": seed, "loss": {metric: value}, "benchmarks": {}}
        for arm, seeds in values.items()
        for seed, value in enumerate(seeds)
    ]


def test_verdicts_spreads_and_ranks() -> None:
    result = stats.summarize(
        scores({"control": [2.0, 2.1], "math": [1.5, 1.52], "code": [2.05, 2.12], "bad": [2.5, 2.4]}),
        {"control": {"prose": 1.0}, "math": {}, "code": {}, "bad": {}},
    )
    math = result["arms"]["math"]["loss"]["math"]
    assert math["mean"] == pytest.approx(1.51) and math["delta"] == pytest.approx(-0.54)
    assert math["spread"] == pytest.approx(0.1) and math["verdict"] == "better" and math["rank"] == 1
    assert result["arms"]["code"]["loss"]["math"]["verdict"] == stats.NOISE
    assert result["arms"]["bad"]["loss"]["math"]["verdict"] == "worse"
    assert result["arms"]["bad"]["loss"]["math"]["rank"] == 3
    assert result["control"]["loss"]["math"] == {"mean": pytest.approx(2.05), "seeds": [2.0, 2.1]}
    assert result["recommendation"].startswith("Add math")
    assert not result["all_within_noise"]


def test_all_within_noise_says_so() -> None:
    result = stats.summarize(scores({"control": [2.0, 2.3], "math": [2.1, 2.2]}), {"control": {}, "math": {}})
    assert result["all_within_noise"] and "more seeds" in result["recommendation"]


def test_benchmarks_have_the_same_structure_and_higher_is_better() -> None:
    rows = [
        {"arm": "control", "seed": 0, "loss": {"math": 2.0}, "benchmarks": {"gsm": {"acc": 0.2}}},
        {"arm": "control", "seed": 1, "loss": {"math": 2.0}, "benchmarks": {"gsm": {"acc": 0.22}}},
        {"arm": "math", "seed": 0, "loss": {"math": 1.0}, "benchmarks": {"gsm": {"acc": 0.4}}},
        {"arm": "math", "seed": 1, "loss": {"math": 1.0}, "benchmarks": {"gsm": {"acc": 0.42}}},
    ]
    result = stats.summarize(rows, {"control": {}, "math": {}})
    block = result["benchmarks"]["arms"]["math"]["gsm/acc"]
    assert block["verdict"] == "better" and block["delta"] == pytest.approx(0.2)
    assert result["benchmarks"]["control"]["gsm/acc"]["seeds"] == [0.2, 0.22]


def test_report_and_plot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from midtrain.microanneal.report import write_report

    result = stats.summarize(
        scores({"control": [2.0, 2.1], "math": [1.5, 1.52]}),
        {"control": {"prose": 1.0}, "math": {"prose": 0.7, "math": 0.3}},
    )
    design = {
        "base": "stand-in",
        "form": "mixture",
        "recipe": "olmo-2-1124-7b",
        "seeds": 2,
        "tokens_per_unit": 1000,
        "steps": 20,
        "global_batch": 1,
        "sequence_length": 50,
        "schedule": "linear 1e-3 → 0",
        "arms": {
            "control": {"sources": {"prose": 1.0}, "streams": {"prose.train": 1.0}},
            "math": {"sources": {"prose": 0.7, "math": 0.3}, "streams": {"prose.train": 0.7, "math.train": 0.3}},
        },
        "notes": ["a note"],
    }
    path = write_report(result, design, tmp_path)
    text = path.read_text()
    assert "Add math" in text and "prose 70.0%, math 30.0%" in text and "**better**" in text
    assert (tmp_path / "deltas.png").stat().st_size > 5000


def test_installed_dvc_can_wait_for_its_lock() -> None:
    """microanneal runs units as parallel `dvc --wait-for-lock repro --single-item` (dvc >= 3.61)."""
    import subprocess
    import sys
    from pathlib import Path

    dvc = Path(sys.executable).with_name("dvc")
    shown = subprocess.run([str(dvc), "--help"], capture_output=True, text=True, timeout=60)
    assert "--wait-for-lock" in shown.stdout
