"""Two reproductions side by side: `midtrain compare-runs A B`, where A and B are DVC experiment
names, git revisions, or `workspace`. Reads each one's metrics/eval.json and position curve from
its commit (an experiment's commit carries them), prints the comparison and plots it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError

WORKSPACE = "workspace"


def load_run(root: Path, rev: str) -> dict[str, Any]:
    """metrics/eval.json, metrics/position_curve.json and params.yaml of one experiment or revision."""
    if rev == WORKSPACE:
        read = lambda name: (root / name).read_text(encoding="utf-8") if (root / name).exists() else None  # noqa: E731
    else:
        commit = _resolve(root, rev)
        read = lambda name: _git_show(root, commit, name)  # noqa: E731
    metrics_text = read("metrics/eval.json")
    if metrics_text is None:
        raise MidtrainError.single(
            f"{rev} has no metrics/eval.json (did its pipeline finish the evaluate stage?)",
            expected="an experiment of `dvc exp show` with metrics",
        )
    from ruamel.yaml import YAML

    params_text = read("params.yaml") or "{}"
    curve_text = read("metrics/position_curve.json")
    return {
        "name": rev,
        "metrics": json.loads(metrics_text),
        "params": YAML(typ="safe", pure=True).load(params_text) or {},
        "curve": json.loads(curve_text) if curve_text else {},
    }


def _resolve(root: Path, rev: str) -> str:
    try:
        from dvc.repo import Repo
        from dvc.scm import resolve_rev

        with Repo(str(root)) as repo:
            return str(resolve_rev(repo.scm, rev))
    except Exception as exc:  # dvc raises several kinds for an unknown name
        raise MidtrainError.single(
            f"no experiment or revision named {rev!r} here ({exc.__class__.__name__})",
            expected="a name from `dvc exp show`, a git revision, or 'workspace'",
            found=rev,
        ) from None


def _git_show(root: Path, commit: str, name: str) -> str | None:
    proc = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=root, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def label(run: dict[str, Any]) -> str:
    params = run["params"]
    extra = f" {' '.join(params.get('overrides') or [])}" if params.get("overrides") else ""
    return f"{run['name']} ({params.get('recipe', '?')}{extra})"


def comparison_lines(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = [
        f"A = {label(a)}",
        f"B = {label(b)}",
        "",
        "held-out loss   A base   A final  A change   B base   B final  B change   B−A final",
    ]
    la, lb = a["metrics"]["loss"], b["metrics"]["loss"]
    for domain in [d for d in la if d in lb]:
        ca, cb = la[domain]["final"] / la[domain]["base"] - 1, lb[domain]["final"] / lb[domain]["base"] - 1
        lines.append(
            f"  {domain:<12} {la[domain]['base']:>8.4f} {la[domain]['final']:>8.4f} {ca:>+8.1%}  {lb[domain]['base']:>8.4f} "
            f"{lb[domain]['final']:>8.4f} {cb:>+8.1%}   {lb[domain]['final'] - la[domain]['final']:>+8.4f}"
        )
    for name, run in (("A", a), ("B", b)):
        position = run["metrics"].get("position_loss", {})
        beyond, inside = position.get("beyond", {}), position.get("in_context", {})
        if beyond.get("final") is not None and inside.get("final"):
            lines.append(
                f"{name}: beyond vs in-context loss, final {beyond['final'] / inside['final'] - 1:+.1%} "
                f"(base {beyond['base'] / inside['base'] - 1:+.1%})"
            )
    ba, bb = a["metrics"].get("benchmarks", {}), b["metrics"].get("benchmarks", {})
    for task in [t for t in ba if t in bb]:
        for metric, pair in ba[task].items():
            if "stderr" in metric or metric not in bb[task]:
                continue
            lines.append(
                f"lm-eval {task} {metric}: A {pair['base']:.3f} → {pair['final']:.3f} · B {bb[task][metric]['base']:.3f} → "
                f"{bb[task][metric]['final']:.3f}"
            )
    return lines


def comparison_figure(plt: Any, a: dict[str, Any], b: dict[str, Any]) -> Any:
    """Final held-out loss per domain (A vs B, base dotted), and loss by position of both finals."""
    import numpy as np

    fig, (ax_domains, ax_position) = plt.subplots(1, 2, figsize=(12, 4))
    la, lb = a["metrics"]["loss"], b["metrics"]["loss"]
    domains = [d for d in la if d in lb]
    for offset, run, color in ((-0.2, a, "#e07b39"), (0.2, b, "#2f6fde")):
        values = [run["metrics"]["loss"][d]["final"] for d in domains]
        bars = ax_domains.bar(
            [i + offset for i in range(len(domains))], values, 0.4, label=f"{run['name']} final", color=color
        )
        for bar, domain in zip(bars, domains):
            change = run["metrics"]["loss"][domain]["final"] / run["metrics"]["loss"][domain]["base"] - 1
            ax_domains.text(
                bar.get_x() + bar.get_width() / 2,
                bar.get_height(),
                f"{change:+.0%}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax_domains.set_xticks(range(len(domains)), domains)
    ax_domains.set_ylabel("held-out loss (nats/token); labels: change vs each run's base")
    ax_domains.legend(fontsize=8)
    for run, color in ((a, "#e07b39"), (b, "#2f6fde")):
        values = run["curve"].get("final")
        if values:
            window = max(1, min(16, len(values) // 20))
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax_position.plot(
                range(window, window + len(smooth)), smooth, color=color, lw=1.2, label=f"{run['name']} final"
            )
    ax_position.set_xlabel("token position in a long document")
    ax_position.set_ylabel("held-out loss")
    if ax_position.get_lines():
        ax_position.legend(fontsize=8)
    fig.suptitle(f"{label(a)}  vs  {label(b)}", fontsize=9)
    fig.tight_layout()
    return fig


def compare_runs(root: Path, rev_a: str, rev_b: str, out: Path) -> tuple[list[str], Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from midtrain.io import atomic_writer

    a, b = load_run(root, rev_a), load_run(root, rev_b)
    fig = comparison_figure(plt, a, b)
    with atomic_writer(out, "wb") as handle:
        fig.savefig(handle, dpi=110, format="png")
    plt.close(fig)
    return comparison_lines(a, b), out
