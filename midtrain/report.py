"""A readable report of a reproduction: Markdown summary, PNG plots, and CSV curves for `dvc plots`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from midtrain.io import write_text

COLORS = {"base": "#9aa5b1", "final": "#2f6fde"}


def _tsv(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return [(int(float(r[0])), float(r[-1])) for r in rows[1:] if r]


def _run_dirs(root: Path, plan: dict[str, Any]) -> list[tuple[str, str, Path]]:
    """(stage, run, directory) in training order, the base first."""
    from midtrain.plan.contract import Layout

    layout = Layout.model_validate(plan["layout"])
    out = [("base", "base", root / layout.base_dir)]
    for stage in plan["stages"]:
        for run in stage["runs"]:
            out.append((stage["name"], run, root / layout.run_dir(run)))
    return out


def build_report(root: Path, plan_path: Path, metrics_path: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = json.loads(plan_path.read_text())
    metrics = json.loads(metrics_path.read_text())
    curve_path = metrics_path.with_name("position_curve.json")
    position_curve = json.loads(curve_path.read_text()) if curve_path.exists() else {}
    from midtrain.io import atomic_dir, remove_stale_temporaries

    remove_stale_temporaries(out.parent)
    with atomic_dir(out) as tmp:  # the report appears whole or not at all: a kill mid-way leaves the previous one
        _write_report(root, plan, metrics, position_curve, tmp, plt)
    return out


def _write_report(root: Path, plan: dict[str, Any], metrics: dict[str, Any], position_curve: dict[str, Any], out: Path, plt: Any) -> None:
    runs = _run_dirs(root, plan)

    # loss and LR as actually run, one global step axis; first run of each stage
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    offset = 0
    seen_stages: set[str] = set()
    curve_rows = []
    for stage, run, directory in runs:
        if stage in seen_stages:
            continue
        seen_stages.add(stage)
        loss = _tsv(directory / "dvclive/plots/metrics/train/loss.tsv")
        lr = _tsv(directory / "dvclive/plots/metrics/train/lr.tsv")
        if not loss:
            continue
        steps = [offset + s for s, _ in loss]
        ax_loss.plot(steps, [v for _, v in loss], lw=1, label=stage)
        ax_lr.plot([offset + s for s, _ in lr], [v for _, v in lr], lw=1)
        ax_loss.axvline(offset, color="#ccc", lw=0.6)
        ax_lr.axvline(offset, color="#ccc", lw=0.6)
        lr_by_step = dict(lr)
        curve_rows += [{"step": offset + s, "stage": stage, "loss": v, "lr": lr_by_step.get(s, "")} for s, v in loss]
        offset = steps[-1]
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(fontsize=8, ncol=4)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step (base, then each stage's first run)")
    ax_loss.set_title(f"{plan['recipe']} at {plan['scale']} scale")
    fig.tight_layout()
    fig.savefig(out / "loss_and_lr.png", dpi=110)
    plt.close(fig)
    with open(out / "curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "stage", "loss", "lr"])
        writer.writeheader()
        writer.writerows(curve_rows)

    # mixture per stage (by built-in stream at tiny scale)
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.5 * max(len(plan["stages"]), 1)))
    labels = ["base"] + [s["name"] for s in plan["stages"]]
    mixes = [plan["base"].get("mix", {})] + [s["streams"] for s in plan["stages"]]
    streams = sorted({k for m in mixes for k in m})
    left = [0.0] * len(labels)
    for stream in streams:
        values = [m.get(stream, 0.0) for m in mixes]
        ax.barh(labels, values, left=left, label=stream.split(".")[0])
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of training sequences")
    ax.legend(fontsize=8, ncol=len(streams), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    fig.savefig(out / "mixture.png", dpi=110)
    plt.close(fig)

    # base vs final per domain
    domains = list(metrics["loss"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for offset_x, which in ((-width / 2, "base"), (width / 2, "final")):
        ax.bar([i + offset_x for i in range(len(domains))], [metrics["loss"][d][which] for d in domains], width, label=which, color=COLORS[which])
    for i, d in enumerate(domains):
        change = metrics["loss"][d]["final"] / metrics["loss"][d]["base"] - 1
        ax.annotate(f"{change:+.1%}", (i, max(metrics["loss"][d].values())), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel("held-out loss (nats/token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "domains.png", dpi=110)
    plt.close(fig)

    # position loss and retrieval
    fig, (ax_pos, ax_ret) = plt.subplots(1, 2, figsize=(10, 3.5))
    cut = (metrics["config"].get("position") or {}).get("base_context", 0)
    import numpy as np

    for which, values in position_curve.items():
        window = max(1, min(16, len(values) // 20))  # a moving average: per-position losses are noisy
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax_pos.plot(range(window, window + len(smooth)), smooth, lw=1.2, label=f"{which} ({window}-position mean)", color=COLORS.get(which))
    ax_pos.axvline(cut, color="#d33", lw=0.8, ls="--")
    ax_pos.set_xlabel("token position in a long document (dashed: the base's context)")
    ax_pos.set_ylabel("held-out loss")
    ax_pos.legend()
    retrieval = metrics.get("retrieval") or {
        task.rsplit("_", 1)[-1]: values["acc,none"] for task, values in metrics.get("benchmarks", {}).items()
        if task.startswith("midtrain_retrieval_") and "acc,none" in values}
    lengths = list(retrieval)
    for offset_x, which in ((-0.2, "base"), (0.2, "final")):
        ax_ret.bar([i + offset_x for i in range(len(lengths))], [retrieval[n][which] for n in lengths], 0.4, label=which, color=COLORS[which])
    ax_ret.set_xticks(range(len(lengths)), [f"{n} tokens" for n in lengths])
    ax_ret.set_ylim(0, 1)
    ax_ret.set_ylabel("retrieval accuracy (planted fact)")
    ax_ret.legend()
    fig.tight_layout()
    fig.savefig(out / "long_context.png", dpi=110)
    plt.close(fig)

    if metrics.get("benchmarks"):
        _benchmark_plot(metrics["benchmarks"], out / "benchmarks.png")
    write_text(out / "summary.md", _markdown(plan, metrics))


def _markdown(plan: dict[str, Any], metrics: dict[str, Any]) -> str:
    where = "on your base" if plan["scale"] == "own-base" else f"at {plan['scale']} scale"
    lines = [f"# {plan['recipe']} reproduced {where}", ""]
    lines += ["| domain | base loss | final loss | change |", "| --- | ---: | ---: | ---: |"]
    for domain, values in metrics["loss"].items():
        lines.append(f"| {domain} | {values['base']:.4f} | {values['final']:.4f} | {values['final'] / values['base'] - 1:+.1%} |")
    position = metrics["position_loss"]
    lines += ["", "| long documents | in the base's context | beyond it | beyond vs in |", "| --- | ---: | ---: | ---: |"]
    for which in [w for w in ("base", "final") if w in position["in_context"]]:
        inside, beyond = position["in_context"][which], position["beyond"][which]
        if beyond is not None:
            lines.append(f"| {which} | {inside:.4f} | {beyond:.4f} | {beyond / inside - 1:+.1%} |")
    if "math_exact_match" in metrics:
        lines += ["", f"Math final-answer exact match: base {metrics['math_exact_match']['base']:.1%}, "
                      f"final {metrics['math_exact_match']['final']:.1%}.", ""]
    if metrics.get("retrieval"):
        lines += ["| retrieval length | base | final |", "| ---: | ---: | ---: |"]
        for length, values in metrics["retrieval"].items():
            lines.append(f"| {length} | {values['base']:.0%} | {values['final']:.0%} |")
    if metrics.get("benchmarks"):
        lines += ["", "| benchmark (lm-eval) | metric | base | final |", "| --- | --- | ---: | ---: |"]
        for task, values in metrics["benchmarks"].items():
            for metric, pair in values.items():
                if "stderr" not in metric and "base" in pair and "final" in pair:
                    lines.append(f"| {task} | {metric} | {pair['base']:.3f} | {pair['final']:.3f} |")
        lines += ["", "![benchmarks](benchmarks.png)"]
    lines += ["", "## Plan", "", "| stage | runs | steps | context | batch | LR start → end | RoPE |", "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for stage in plan["stages"]:
        lines.append(f"| {stage['name']} | {len(stage['runs'])} | {stage['steps']} | {stage['sequence_length']} | {stage['global_batch']} | "
                     f"{_lr(stage['lr_start'])} → {_lr(stage['lr_end'])} | {stage['rope']} |")
    if plan["merges"]:
        lines += ["", "Merges: " + "; ".join(f"{m['name']} ({m['method']} of {', '.join(m['inputs'])})" for m in plan["merges"])]
    if plan["notes"]:
        lines += ["", "Adjustments made by scaling:", ""] + [f"- {n}" for n in plan["notes"]]
    lines += ["", "![loss and LR](loss_and_lr.png)", "", "![mixture](mixture.png)", "", "![domains](domains.png)", "", "![long context](long_context.png)", ""]
    return "\n".join(lines)


def _lr(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def _benchmark_plot(benchmarks: dict[str, Any], path: Path) -> None:
    """Base vs final per lm-eval task (the task's main metric: the first without a stderr)."""
    import matplotlib.pyplot as plt

    rows = []
    for task, metrics in benchmarks.items():
        main = next((m for m in metrics if "stderr" not in m and {"base", "final"} <= set(metrics[m])), None)
        if main:
            rows.append((task, main, metrics[main]))
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2), 3.6))
    for offset_x, which in ((-0.2, "base"), (0.2, "final")):
        ax.bar([i + offset_x for i in range(len(rows))], [r[2][which] for r in rows], 0.4, label=which, color=COLORS[which])
    ax.set_xticks(range(len(rows)), [f"{t}\n({m.split(',')[0]})" for t, m, _ in rows], fontsize=8)
    ax.set_ylabel("score")
    ax.set_title("lm-evaluation-harness: base vs final")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
