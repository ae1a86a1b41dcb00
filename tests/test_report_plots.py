"""The report's plots, rendered and inspected: axes and tick labels, every run drawn, data present,
and a zero result that still reads as a result. Plus the regression note of the end-of-run table."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from midtrain import report

PLAN = {
    "recipe": "olmo-2-1124-7b",
    "scale": "tiny",
    "objectives": ["math", "general"],
    "layout": {"data": "tiny", "run": "olmo-2-1124-7b"},
    "base": {"mix": {"prose.train": 0.8, "code.train": 0.15, "math.train": 0.05}},
    "stages": [
        {
            "name": "anneal",
            "runs": ["anneal-0", "anneal-1", "anneal-2"],
            "streams": {"prose.train": 0.6, "qa.train": 0.19, "math.train": 0.21},
        }
    ],
    "merges": [{"name": "soup", "method": "uniform", "inputs": ["anneal-0", "anneal-1", "anneal-2"]}],
}
METRICS = {
    "loss": {
        "math": {"base": 1.3, "final": 1.0},
        "prose": {"base": 4.0, "final": 4.3},
        "code": {"base": 4.4, "final": 4.41},
    },
    "position_loss": {"in_context": {"base": 3.0, "final": 2.9}, "beyond": {"base": 3.3, "final": 3.0}},
    "retrieval": {"128": {"base": 0.0, "final": 0.0}, "512": {"base": 0.0, "final": 0.0}},
    "config": {"position": {"base_context": 128}},
}


def _log(directory: Path, steps: int, start: float) -> None:
    for name, values in (
        ("loss", [start - 0.01 * i for i in range(steps)]),
        ("lr", [1e-3 * (1 - i / steps) for i in range(steps)]),
    ):
        path = directory / "dvclive/plots/metrics/train" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("step\t" + name + "\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))


def _labels(axis) -> list[str]:  # type: ignore[no-untyped-def]
    axis.figure.canvas.draw()
    return [t.get_text() for t in axis.get_xticklabels() + axis.get_yticklabels() if t.get_text()]


def _not_blank(fig, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fig.savefig(tmp_path / "x.png", dpi=60)
    pixels = plt.imread(tmp_path / "x.png")
    assert pixels.std() > 0.05


def test_loss_and_lr_draws_every_run_with_stage_and_merge_marks(tmp_path: Path) -> None:
    _log(tmp_path / "runs/olmo-2-1124-7b/base", 20, 5.0)
    for index in range(3):
        _log(tmp_path / f"runs/olmo-2-1124-7b/mid/anneal-{index}", 10, 4.0 + 0.05 * index)
    curves = report.training_curves(tmp_path, PLAN)
    assert [c["run"] for c in curves] == ["base", "anneal-0", "anneal-1", "anneal-2"]
    assert {c["offset"] for c in curves[1:]} == {19}  # the stage starts where the base ended; its runs overlap
    fig = report.figure_loss_and_lr(plt, PLAN, curves)
    loss_axis, lr_axis = fig.axes
    assert len(loss_axis.get_lines()) >= 4 and all(len(line.get_xdata()) for line in loss_axis.get_lines())
    assert loss_axis.get_ylabel() and lr_axis.get_xlabel() and lr_axis.get_ylabel()
    assert _labels(loss_axis) and _labels(lr_axis)
    texts = " ".join(t.get_text() for t in loss_axis.texts)
    assert "anneal (3 runs)" in texts and "soup" in texts
    _not_blank(fig, tmp_path)


def test_mixture_is_readable_with_shares_on_the_segments(tmp_path: Path) -> None:
    fig = report.figure_mixture(plt, PLAN)
    axis = fig.axes[0]
    assert fig.get_size_inches()[1] >= 2.5
    labels = [t.get_text() for t in axis.texts]
    assert "80%" in labels and "60%" in labels and "21%" in labels
    assert [t.get_text() for t in axis.get_yticklabels()] == ["base", "anneal"]
    assert axis.get_legend() is not None and axis.get_xlabel()
    _not_blank(fig, tmp_path)


def test_zero_retrieval_reads_as_a_result_not_an_empty_frame(tmp_path: Path) -> None:
    curve = {"base": list(np.linspace(3, 3.3, 500)), "final": list(np.linspace(3, 3.0, 500))}
    fig = report.figure_long_context(plt, METRICS, curve)
    position, retrieval = fig.axes
    assert len(position.get_lines()) >= 2 and position.get_xlabel()
    texts = [t.get_text() for t in retrieval.texts]
    assert texts.count("0%") == 4 and any("no planted fact retrieved" in t for t in texts)
    assert [t.get_text() for t in retrieval.get_xticklabels()] == ["128 tokens", "512 tokens"]
    _not_blank(fig, tmp_path)


def test_domains_and_table_call_out_regressions(tmp_path: Path) -> None:
    fig = report.figure_domains(plt, METRICS)
    colors = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colors["+7.5%"] == "#c62828" and colors["-23.1%"] == "#2e7d32"
    lines = report.summary_lines(METRICS, PLAN["objectives"])
    prose = next(line for line in lines if line.strip().startswith("prose"))
    math = next(line for line in lines if line.strip().startswith("math "))
    assert "REGRESSION" in prose and "intended" in math and "REGRESSION" not in math
    assert any(line.startswith("note: the final model is worse than the base on prose") for line in lines)
    markdown = report._markdown(PLAN | {"stages": [], "merges": [], "notes": []}, METRICS)
    assert "**Regressions.**" in markdown and "prose" in markdown
