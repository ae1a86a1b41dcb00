"""Statistics of a microanneal: per metric, the control's mean and every arm's mean, delta,
seed spread, verdict and rank.

- spread: the larger of the control's and the arm's min–max range over seeds;
- verdict: "within noise" when |delta| ≤ spread, else "better" or "worse" (lower is better for
  losses and perplexities, higher for accuracies);
- rank: 1 is the arm that improves a metric most.
"""

from __future__ import annotations

import statistics
from typing import Any

LOWER_IS_BETTER = ("loss", "perplexity", "bits_per_byte", "bpb", "nll")
NOISE = "within noise"


def lower_is_better(metric: str) -> bool:
    return metric in ("prose", "code", "math", "qa", "longdoc", "math-answer") or any(
        word in metric for word in LOWER_IS_BETTER
    )


def _range(values: list[float]) -> float:
    return max(values) - min(values) if values else 0.0


def compare(control: list[float], arm: list[float], lower: bool) -> dict[str, Any]:
    """One arm against the control on one metric."""
    mean = statistics.fmean(arm)
    base = statistics.fmean(control)
    delta = mean - base
    spread = max(_range(control), _range(arm))
    if abs(delta) <= spread:
        verdict = NOISE
    else:
        verdict = "better" if (delta < 0) == lower else "worse"
    return {
        "mean": mean,
        "seeds": arm,
        "delta": delta,
        "relative": delta / base if base else None,
        "spread": spread,
        "verdict": verdict,
    }


def _rank(arms: dict[str, dict[str, Any]], lower: bool) -> None:
    order = sorted(arms, key=lambda name: arms[name]["delta"] if lower else -arms[name]["delta"])
    for position, name in enumerate(order, start=1):
        arms[name]["rank"] = position


def _table(values: dict[str, dict[str, list[float]]], control: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """values[arm][metric] = per-seed values -> (control block, arm blocks)."""
    control_block = {
        metric: {"mean": statistics.fmean(seeds), "seeds": seeds} for metric, seeds in values[control].items()
    }
    arms: dict[str, dict[str, Any]] = {name: {} for name in values if name != control}
    for metric, control_seeds in values[control].items():
        lower = lower_is_better(metric)
        per_metric = {
            name: compare(control_seeds, values[name][metric], lower) for name in arms if metric in values[name]
        }
        _rank(per_metric, lower)
        for name, block in per_metric.items():
            arms[name][metric] = block
    return control_block, arms


def collect(scores: list[dict[str, Any]], key: str) -> dict[str, dict[str, list[float]]]:
    """Per-seed values by arm and metric, seeds in order. `key` is "loss" or "benchmarks"
    (whose metrics are flattened to "task/metric")."""
    out: dict[str, dict[str, list[float]]] = {}
    for score in sorted(scores, key=lambda s: (s["arm"], s["seed"])):
        metrics = score.get(key) or {}
        if key == "benchmarks":
            metrics = {f"{task}/{name}": value for task, values in metrics.items() for name, value in values.items()}
        for metric, value in metrics.items():
            out.setdefault(score["arm"], {}).setdefault(metric, []).append(float(value))
    return out


def summarize(
    scores: list[dict[str, Any]], arms: dict[str, dict[str, float]], control: str = "control"
) -> dict[str, Any]:
    """The result JSON: control, arms (with sources) and benchmarks, plus a recommendation."""
    losses = collect(scores, "loss")
    control_loss, arm_loss = _table(losses, control)
    result: dict[str, Any] = {
        "control": {"sources": arms[control], "loss": control_loss},
        "arms": {name: {"sources": arms[name], "loss": arm_loss.get(name, {})} for name in arms if name != control},
        "benchmarks": {},
    }
    benches = collect(scores, "benchmarks")
    if benches.get(control):
        control_bench, arm_bench = _table(benches, control)
        result["benchmarks"] = {"control": control_bench, "arms": arm_bench}
    result["recommendation"], result["all_within_noise"] = recommend(result)
    return result


def _verdicts(result: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    blocks = list(result["arms"][name]["loss"].items())
    blocks += list(result["benchmarks"].get("arms", {}).get(name, {}).items())
    return blocks


def recommend(result: dict[str, Any]) -> tuple[str, bool]:
    """One line: which candidate to add, on which targets it wins, and what it costs."""
    verdicts = {name: _verdicts(result, name) for name in result["arms"]}
    every = [block["verdict"] for blocks in verdicts.values() for _, block in blocks]
    if every and all(v == NOISE for v in every):
        return (
            "Every difference is within the seed-to-seed noise: run more seeds (--seeds) or more tokens per arm "
            "(--tokens) before choosing.",
            True,
        )

    def merit(name: str) -> tuple[int, int, float]:
        wins = sum(block["verdict"] == "better" for _, block in verdicts[name])
        losses = sum(block["verdict"] == "worse" for _, block in verdicts[name])
        gain = sum(-(block.get("relative") or 0.0) for metric, block in verdicts[name] if lower_is_better(metric))
        return wins, -losses, gain

    best = max(result["arms"], key=merit)
    wins = [metric for metric, block in verdicts[best] if block["verdict"] == "better"]
    costs = [metric for metric, block in verdicts[best] if block["verdict"] == "worse"]
    if not wins:
        return "No candidate beats the control beyond seed noise; keep the control mix.", False

    def change(metric: str) -> str:
        block = dict(verdicts[best])[metric]
        rel = block.get("relative")
        return f"{metric} {rel:+.1%}" if rel is not None else f"{metric} {block['delta']:+.3g}"

    line = f"Add {best}: better than the control on {', '.join(change(m) for m in wins)}"
    line += f"; worse on {', '.join(change(m) for m in costs)}." if costs else ", with no regression beyond noise."
    return line, False
