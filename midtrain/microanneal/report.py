"""report/microanneal.md and report/deltas.png: the table, the exact mixtures, the dot plot of
deltas with seed spreads per target, and the one-line recommendation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from midtrain.microanneal.stats import NOISE, lower_is_better

COLORS = {"better": "#1a7f37", "worse": "#cf222e", NOISE: "#57606a"}


def _fmt_relative(block: dict[str, Any]) -> str:
    rel = block.get("relative")
    return f"{rel:+.1%}" if rel is not None else f"{block['delta']:+.3g}"


def _table(result: dict[str, Any], key: str) -> list[str]:
    if key == "loss":
        control, arms = result["control"]["loss"], {n: a["loss"] for n, a in result["arms"].items()}
    else:
        control, arms = result["benchmarks"]["control"], result["benchmarks"]["arms"]
    names = list(arms)
    lines = ["| metric | control | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for metric, block in control.items():
        direction = "↓" if lower_is_better(metric) else "↑"
        cells = [f"{metric} {direction}", f"{block['mean']:.4f}"]
        for name in names:
            arm = arms[name].get(metric)
            if arm is None:
                cells.append("–")
                continue
            mark = {"better": "**better**", "worse": "*worse*", NOISE: "noise"}[arm["verdict"]]
            cells.append(f"{arm['mean']:.4f} ({_fmt_relative(arm)} ± {arm['spread']:.3g}, {mark}, #{arm['rank']})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mixtures(design: dict[str, Any]) -> list[str]:
    lines = ["| arm | sources | streams read |", "|---|---|---|"]
    for name, arm in design["arms"].items():
        sources = ", ".join(f"{s} {v:.1%}" for s, v in arm["sources"].items())
        streams = ", ".join(f"{s} {v:.1%}" for s, v in arm["streams"].items())
        lines.append(f"| {name} | {sources} | {streams} |")
    return lines


def markdown(result: dict[str, Any], design: dict[str, Any]) -> str:
    lines = [
        "# Microanneal",
        "",
        f"**Recommendation.** {result['recommendation']}",
        "",
        f"Base {design['base']} · {design['form']} form ({design['recipe']}) · {len(design['arms']) - 1} candidate arm(s) "
        f"and the control · {design['seeds']} seed(s) each · {design['tokens_per_unit']:,} tokens per unit "
        f"({design['steps']} steps × {design['global_batch']} × {design['sequence_length']}) · {design['schedule']}",
        "",
        "## Held-out loss (nats/token)",
        "",
        "Each cell: mean over seeds (change vs the control ± seed spread, verdict, rank). A verdict needs "
        "|change| above the larger of the control's and the arm's min–max range over seeds. `math-answer` is "
        "the loss on final-answer tokens of held-out math problems only.",
        "",
        *_table(result, "loss"),
    ]
    if result["benchmarks"]:
        lines += ["", "## lm-eval tasks", "", *_table(result, "benchmarks")]
    if result.get("all_within_noise"):
        lines += [
            "",
            "> Every verdict is within noise: add seeds (--seeds) or tokens (--tokens) and rerun; "
            "finished units are cached, so only the new ones run.",
        ]
    lines += ["", "## Exact mixtures", "", *_mixtures(design), "", "![deltas](deltas.png)"]
    if design.get("notes"):
        lines += ["", "## Notes", "", *[f"- {note}" for note in design["notes"]]]
    return "\n".join(lines) + "\n"


def dot_plot(result: dict[str, Any], path: Path) -> None:
    """Relative change vs the control per target (one panel each), one row per arm: the mean as a
    large dot coloured by verdict, each seed as a small dot, the spread as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(result["control"]["loss"])
    arms = list(result["arms"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 1.5, 0.55 * len(arms) + 1.6), sharey=True)
    axes = list(axes) if len(metrics) > 1 else [axes]
    control = result["control"]["loss"]
    for ax, metric in zip(axes, metrics):
        base = control[metric]["mean"]
        ax.axvline(0, color="#999", lw=1)
        for row, name in enumerate(arms):
            block = result["arms"][name]["loss"].get(metric)
            if block is None:
                continue
            rel = (block["mean"] - base) / base * 100
            spread = block["spread"] / base * 100
            ax.errorbar(rel, row, xerr=spread, fmt="o", color=COLORS[block["verdict"]], ms=7, capsize=3, lw=1.2)
            ax.scatter(
                [(v - base) / base * 100 for v in block["seeds"]],
                [row] * len(block["seeds"]),
                s=10,
                color="#222",
                zorder=3,
            )
        ax.set_title(f"{metric} ↓", fontsize=10)
        ax.set_xlabel("Δ vs control (%)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(arms)), arms)
    axes[0].invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Held-out loss change vs the control (dot: mean; bar: seed spread; small dots: seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_report(result: dict[str, Any], design: dict[str, Any], out: Path) -> Path:
    from midtrain.io import write_text

    dot_plot(result, out / "deltas.png")
    path = out / "microanneal.md"
    write_text(path, markdown(result, design))
    return path
