"""A readable report of a reproduction: Markdown summary, PNG plots, and CSV curves for `dvc plots`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from midtrain.io import write_text

COLORS = {"base": "#9aa5b1", "final": "#2f6fde"}
REGRESSION = 0.03  # a held-out loss more than 3% worse than the base's is reported as a regression
TARGET_DOMAINS = {
    "math": "math",
    "reasoning": "math",
    "code": "code",
    "instruction": "qa",
    "knowledge": "qa",
    "general": "prose",
}


def domain_verdicts(metrics: dict[str, Any], objectives: list[str]) -> dict[str, str]:
    """Per held-out domain: 'intended' (a recipe objective), 'REGRESSION' (worse by more than 3%),
    or ''. What the end-of-run table and summary.md print beside each change."""
    targets = {TARGET_DOMAINS[o] for o in objectives if o in TARGET_DOMAINS}
    verdicts = {}
    for domain, values in metrics["loss"].items():
        change = values["final"] / values["base"] - 1
        words = []
        if domain in targets:
            words.append("intended")
        if change > REGRESSION:
            words.append(f"REGRESSION: {change:+.1%}, worse by more than {REGRESSION:.0%}")
        verdicts[domain] = "; ".join(words)
    return verdicts


def summary_lines(metrics: dict[str, Any], objectives: list[str] | None = None) -> list[str]:
    """The end-of-run table (printed once, by `midtrain reproduce`)."""
    verdicts = domain_verdicts(metrics, objectives or [])
    lines = ["held-out loss        base     final    change"]
    for domain, values in metrics["loss"].items():
        change = values["final"] / values["base"] - 1
        lines.append(
            f"  {domain:<10} {values['base']:>9.4f} {values['final']:>9.4f} {change:>+8.1%}   {verdicts[domain]}".rstrip()
        )
    position = metrics["position_loss"]
    if position["beyond"].get("base") is not None and position["beyond"].get("final") is not None:
        lines.append("beyond vs in-context loss (long documents)")
        for which in ("base", "final"):
            ratio = position["beyond"][which] / position["in_context"][which] - 1
            lines.append(
                f"  {which:<10} in {position['in_context'][which]:.4f} · beyond {position['beyond'][which]:.4f} ({ratio:+.1%})"
            )
    if "math_exact_match" in metrics:
        lines.append("math exact match     base {base:.1%} → final {final:.1%}".format(**metrics["math_exact_match"]))
    for length, values in metrics.get("retrieval", {}).items():
        lines.append(f"retrieval @ {length:>5} tokens   base {values['base']:.0%} → final {values['final']:.0%}")
    for task, values in metrics.get("benchmarks", {}).items():
        for metric, pair in values.items():
            if "stderr" not in metric and {"base", "final"} <= set(pair):
                lines.append(f"lm-eval {task:<24} {metric:<10} base {pair['base']:.3f} → final {pair['final']:.3f}")
    regressions = [d for d, v in verdicts.items() if "REGRESSION" in v]
    if regressions:
        lines.append(
            f"note: the final model is worse than the base on {', '.join(regressions)} by more than {REGRESSION:.0%}; "
            "see report/summary.md"
        )
    return lines


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


def _write_report(
    root: Path, plan: dict[str, Any], metrics: dict[str, Any], position_curve: dict[str, Any], out: Path, plt: Any
) -> None:
    curves = training_curves(root, plan)
    figures = {
        "loss_and_lr.png": figure_loss_and_lr(plt, plan, curves),
        "mixture.png": figure_mixture(plt, plan),
        "domains.png": figure_domains(plt, metrics),
        "long_context.png": figure_long_context(plt, metrics, position_curve),
    }
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
    with open(out / "curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "stage", "run", "loss", "lr"])
        writer.writeheader()
        for curve in curves:
            lr_by_step = dict(curve["lr"])
            writer.writerows(
                {
                    "step": curve["offset"] + s,
                    "stage": curve["stage"],
                    "run": curve["run"],
                    "loss": v,
                    "lr": lr_by_step.get(s, ""),
                }
                for s, v in curve["loss"]
            )
    if metrics.get("benchmarks"):
        fig = figure_benchmarks(plt, metrics["benchmarks"])
        if fig is not None:
            fig.savefig(out / "benchmarks.png", dpi=110)
            plt.close(fig)
    write_text(out / "summary.md", _markdown(plan, metrics))


def training_curves(root: Path, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run's logged loss and LR, placed on one step axis: each stage starts where the previous
    stage's runs ended (runs of one stage overlap: they are data orders of the same stage)."""
    curves: list[dict[str, Any]] = []
    offset, stage_end, current = 0, 0, None
    for stage, run, directory in _run_dirs(root, plan):
        if stage != current:
            offset, current = stage_end, stage
        loss = _tsv(directory / "dvclive/plots/metrics/train/loss.tsv")
        lr = _tsv(directory / "dvclive/plots/metrics/train/lr.tsv")
        if not loss:
            continue
        curves.append({"stage": stage, "run": run, "offset": offset, "loss": loss, "lr": lr})
        stage_end = max(stage_end, offset + loss[-1][0])
    return curves


def figure_loss_and_lr(plt: Any, plan: dict[str, Any], curves: list[dict[str, Any]]) -> Any:
    """Training loss and the LR actually run: every run of a stage as a thin line, stage boundaries
    and the merges that close a stage marked."""
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    stages = list(dict.fromkeys(c["stage"] for c in curves))
    for curve in curves:
        color = palette[stages.index(curve["stage"]) % len(palette)]
        first = curve is next(c for c in curves if c["stage"] == curve["stage"])
        ax_loss.plot(
            [curve["offset"] + s for s, _ in curve["loss"]],
            [v for _, v in curve["loss"]],
            lw=0.8 if not first else 1.1,
            alpha=0.85,
            color=color,
            label=curve["stage"] if first else None,
        )
        ax_lr.plot([curve["offset"] + s for s, _ in curve["lr"]], [v for _, v in curve["lr"]], lw=0.8, color=color)
    for stage in stages:
        start = min(c["offset"] for c in curves if c["stage"] == stage)
        end = max(c["offset"] + c["loss"][-1][0] for c in curves if c["stage"] == stage)
        for axis in (ax_loss, ax_lr):
            axis.axvline(start, color="#bbb", lw=0.7)
        runs = sum(1 for c in curves if c["stage"] == stage)
        merges = [m for m in plan.get("merges", []) if any(i.startswith(stage) for i in m["inputs"])]
        label = (
            stage + (f" ({runs} runs)" if runs > 1 else "") + "".join(f" → {m['name']} ({m['method']})" for m in merges)
        )
        ax_loss.annotate(
            label,
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
        )
        for _merge in merges:
            ax_loss.axvline(end, color="#555", lw=0.9, ls=":")
    ax_loss.set_ylabel("training loss (nats/token)")
    if stages:
        ax_loss.legend(fontsize=8, ncol=min(len(stages), 5), loc="lower left")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step (the base, then each stage; all runs of a stage drawn, thin)")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    scale = "your base" if plan.get("scale") == "own-base" else f"{plan.get('scale')} scale"
    ax_loss.set_title(f"{plan['recipe']} on {scale}")
    if not curves:
        ax_loss.text(
            0.5,
            0.5,
            "no training logged (a pretrained base has no curve here)",
            transform=ax_loss.transAxes,
            ha="center",
        )
    fig.tight_layout()
    return fig


def figure_mixture(plt: Any, plan: dict[str, Any]) -> Any:
    """One bar per training phase (the base, then each stage), segments labelled with their share."""
    labels = (["base"] if plan["base"].get("mix") else []) + [s["name"] for s in plan["stages"]]
    mixes = ([plan["base"]["mix"]] if plan["base"].get("mix") else []) + [s["streams"] for s in plan["stages"]]
    streams = sorted({k for m in mixes for k in m})
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.7 * max(len(labels), 1)))
    left = [0.0] * len(labels)
    for stream in streams:
        values = [m.get(stream, 0.0) for m in mixes]
        bars = ax.barh(labels, values, left=left, label=stream.removesuffix(".train"), height=0.6)
        for bar, value in zip(bars, values):
            if value >= 0.06:
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_y() + bar.get_height() / 2,
                    f"{value:.0%}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                )
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of training sequences")
    ax.set_title("data mixture by phase")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def figure_domains(plt: Any, metrics: dict[str, Any]) -> Any:
    """Held-out loss per domain, base vs final, with the change; regressions over 3% in red."""
    domains = list(metrics["loss"])
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.38
    for offset_x, which in ((-width / 2, "base"), (width / 2, "final")):
        ax.bar(
            [i + offset_x for i in range(len(domains))],
            [metrics["loss"][d][which] for d in domains],
            width,
            label=which,
            color=COLORS[which],
        )
    for i, domain in enumerate(domains):
        change = metrics["loss"][domain]["final"] / metrics["loss"][domain]["base"] - 1
        color = "#c62828" if change > REGRESSION else ("#2e7d32" if change < 0 else "#333")
        ax.annotate(
            f"{change:+.1%}",
            (i, max(metrics["loss"][domain].values())),
            ha="center",
            va="bottom",
            fontsize=9,
            color=color,
        )
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("held-out loss per domain (red: worse by more than 3%)")
    ax.legend()
    fig.tight_layout()
    return fig


def figure_long_context(plt: Any, metrics: dict[str, Any], position_curve: dict[str, Any]) -> Any:
    """Loss by position in long documents, and planted-fact retrieval by length (values written on
    the bars, so a 0% result reads as a result, not an empty frame)."""
    import numpy as np

    fig, (ax_pos, ax_ret) = plt.subplots(1, 2, figsize=(11, 3.8))
    cut = (metrics["config"].get("position") or {}).get("base_context", 0)
    for which, values in position_curve.items():
        window = max(1, min(16, len(values) // 20))  # a moving average: per-position losses are noisy
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax_pos.plot(
            range(window, window + len(smooth)),
            smooth,
            lw=1.2,
            label=f"{which} ({window}-position mean)",
            color=COLORS.get(which),
        )
    if cut:
        ax_pos.axvline(cut, color="#d33", lw=0.8, ls="--")
    ax_pos.set_xlabel("token position in a long document (dashed: the base's context)")
    ax_pos.set_ylabel("held-out loss (nats/token)")
    if position_curve:
        ax_pos.legend(fontsize=8)
    retrieval = metrics.get("retrieval") or {
        task.rsplit("_", 1)[-1]: values["acc,none"]
        for task, values in metrics.get("benchmarks", {}).items()
        if task.startswith("midtrain_retrieval_") and "acc,none" in values
    }
    lengths = list(retrieval)
    for offset_x, which in ((-0.2, "base"), (0.2, "final")):
        values = [retrieval[n][which] for n in lengths]
        bars = ax_ret.bar([i + offset_x for i in range(len(lengths))], values, 0.4, label=which, color=COLORS[which])
        for bar, value in zip(bars, values):
            ax_ret.text(
                bar.get_x() + bar.get_width() / 2, value + 0.02, f"{value:.0%}", ha="center", va="bottom", fontsize=8
            )
    ax_ret.set_xticks(range(len(lengths)), [f"{n} tokens" for n in lengths])
    ax_ret.set_ylim(0, 1.1)
    ax_ret.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax_ret.set_ylabel("retrieval accuracy (planted fact)")
    if lengths and all(retrieval[n][w] == 0 for n in lengths for w in ("base", "final")):
        ax_ret.text(
            0.5,
            0.6,
            "no planted fact retrieved by either model\n(expected for models this small)",
            transform=ax_ret.transAxes,
            ha="center",
            fontsize=9,
            color="#555",
        )
    if not lengths:
        ax_ret.text(0.5, 0.5, "retrieval not evaluated", transform=ax_ret.transAxes, ha="center", color="#555")
    ax_ret.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def _markdown(plan: dict[str, Any], metrics: dict[str, Any]) -> str:
    where = "on your base" if plan["scale"] == "own-base" else f"at {plan['scale']} scale"
    lines = [f"# {plan['recipe']} reproduced {where}", ""]
    verdicts = domain_verdicts(metrics, plan.get("objectives", []))
    lines += ["| domain | base loss | final loss | change | |", "| --- | ---: | ---: | ---: | --- |"]
    for domain, values in metrics["loss"].items():
        lines.append(
            f"| {domain} | {values['base']:.4f} | {values['final']:.4f} | {values['final'] / values['base'] - 1:+.1%} | "
            f"{verdicts[domain]} |"
        )
    regressions = [d for d, v in verdicts.items() if "REGRESSION" in v]
    if regressions:
        lines += [
            "",
            f"**Regressions.** The final model is worse than the base on {', '.join(regressions)} by more than "
            f"{REGRESSION:.0%} (held-out loss), beside the intended effect on the recipe's objectives "
            f"({', '.join(plan.get('objectives', [])) or 'none stated'}).",
        ]
    position = metrics["position_loss"]
    lines += [
        "",
        "| long documents | in the base's context | beyond it | beyond vs in |",
        "| --- | ---: | ---: | ---: |",
    ]
    for which in [w for w in ("base", "final") if w in position["in_context"]]:
        inside, beyond = position["in_context"][which], position["beyond"][which]
        if beyond is not None:
            lines.append(f"| {which} | {inside:.4f} | {beyond:.4f} | {beyond / inside - 1:+.1%} |")
    if "math_exact_match" in metrics:
        lines += [
            "",
            f"Math final-answer exact match: base {metrics['math_exact_match']['base']:.1%}, "
            f"final {metrics['math_exact_match']['final']:.1%}.",
            "",
        ]
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
    lines += [
        "",
        "## Plan",
        "",
        "| stage | runs | steps | context | batch | LR start → end | RoPE |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for stage in plan["stages"]:
        lines.append(
            f"| {stage['name']} | {len(stage['runs'])} | {stage['steps']} | {stage['sequence_length']} | {stage['global_batch']} | "
            f"{_lr(stage['lr_start'])} → {_lr(stage['lr_end'])} | {stage['rope']} |"
        )
    if plan["merges"]:
        lines += [
            "",
            "Merges: " + "; ".join(f"{m['name']} ({m['method']} of {', '.join(m['inputs'])})" for m in plan["merges"]),
        ]
    if plan["notes"]:
        lines += ["", "Adjustments made by scaling:", ""] + [f"- {n}" for n in plan["notes"]]
    lines += [
        "",
        "![loss and LR](loss_and_lr.png)",
        "",
        "![mixture](mixture.png)",
        "",
        "![domains](domains.png)",
        "",
        "![long context](long_context.png)",
        "",
    ]
    return "\n".join(lines)


def _lr(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def figure_benchmarks(plt: Any, benchmarks: dict[str, Any]) -> Any:
    """Base vs final per lm-eval task (the task's main metric: the first without a stderr)."""
    rows = []
    for task, metrics in benchmarks.items():
        main = next((m for m in metrics if "stderr" not in m and {"base", "final"} <= set(metrics[m])), None)
        if main:
            rows.append((task, main, metrics[main]))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2), 3.8))
    for offset_x, which in ((-0.2, "base"), (0.2, "final")):
        bars = ax.bar(
            [i + offset_x for i in range(len(rows))], [r[2][which] for r in rows], 0.4, label=which, color=COLORS[which]
        )
        for bar, row in zip(bars, rows):
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                row[2][which],
                f"{row[2][which]:.2f}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(range(len(rows)), [f"{t}\n({m.split(',')[0]})" for t, m, _ in rows], fontsize=8)
    ax.set_ylabel("score")
    ax.set_title("lm-evaluation-harness: base vs final")
    ax.legend()
    fig.tight_layout()
    return fig
