"""The measuring discipline every benchmark here shares.

On a shared machine the load changes from second to second, so an absolute figure, or the best of
two runs, says little. Instead:

1. the compared programs are alternated, A B A B ... A, for `--repeats` rounds (default 5), the
   baseline A first in every round and once more at the end, so that every measurement of B is
   bracketed by two of A;
2. each round gives one ratio: B against A interpolated (linearly in time) between the two runs
   of A around it, so a load that drifts during the run biases neither side (with a plain A B
   order, B would always run later and pay for any upward drift);
3. the benchmark reports the MEDIAN of those ratios and their min–max spread; its `--json` line
   carries the median as `ratio_*` and the spread as `ratio_spread: [min, max]`.

A spread wider than ±10% around the median says the machine was busy: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_REPEATS = 5


def repeats_type(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--repeats must be at least 1 (5 or more for a figure to quote)")
    return value


def add_repeats_argument(parser: argparse.ArgumentParser, default: int = DEFAULT_REPEATS) -> None:
    parser.add_argument(
        "--repeats",
        type=repeats_type,
        default=default,
        help=f"rounds of A B alternation; the median and min–max of the per-round ratios are reported (default {default})",
    )


@dataclass
class Runs:
    """What `alternate` measured: every program's values and the moments (perf_counter, the
    middle of each call) they were taken, round by round; the baseline has one more, the closing bracket."""

    baseline: str
    values: dict[str, list[float]]
    times: dict[str, list[float]]

    def __getitem__(self, name: str) -> list[float]:
        return self.values[name]

    def baseline_for(self, name: str) -> list[float]:
        """For each measurement of `name`, the baseline interpolated, linearly in time, between
        the baseline runs just before and just after it."""
        base_values, base_times = self.values[self.baseline], self.times[self.baseline]
        out = []
        for moment in self.times[name]:
            after = next((i for i, t in enumerate(base_times) if t > moment), len(base_times) - 1)
            before = max(after - 1, 0)
            t0, t1 = base_times[before], base_times[after]
            weight = (moment - t0) / (t1 - t0) if t1 > t0 else 0.0
            weight = min(max(weight, 0.0), 1.0)
            out.append(base_values[before] + (base_values[after] - base_values[before]) * weight)
        return out


def alternate(
    programs: dict[str, Callable[[], float]], repeats: int, warmup_rounds: int = 0, progress: bool = True
) -> Runs:
    """Run every program once per round, in the given order (the first is the baseline), for
    `warmup_rounds` discarded rounds and then `repeats` measured ones, and the baseline once more
    at the end: A B A B ... A (A B C A B C ... A for three). Each program returns one measurement
    (seconds, or a rate)."""
    names = list(programs)
    baseline = names[0]
    runs = Runs(baseline, {name: [] for name in names}, {name: [] for name in names})

    def measure(name: str) -> None:
        start = time.perf_counter()
        value = programs[name]()
        runs.values[name].append(value)
        runs.times[name].append((start + time.perf_counter()) / 2)

    for round_index in range(warmup_rounds + repeats):
        warm = round_index < warmup_rounds
        started = time.perf_counter()
        for name in names:
            if warm:
                programs[name]()
            else:
                measure(name)
        if progress:
            label = "warm-up round" if warm else f"round {round_index - warmup_rounds + 1}/{repeats}"
            print(f"  {label} done in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    measure(baseline)  # the closing bracket of the last round
    return runs


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of one comparison."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def spread(self, digits: int = 3) -> list[float]:
        """[min, max] of the per-round ratios, for the JSON line."""
        return [round(self.low, digits), round(self.high, digits)]

    def relative_spread(self) -> float:
        """The larger distance of min or max from the median, as a fraction of the median."""
        return max(self.median - self.low, self.high - self.median) / self.median if self.median else float("inf")

    def text(self, digits: int = 2, unit: str = "") -> str:
        """ "1.02 (median of 5 alternated rounds, spread 0.98–1.05)"."""
        rounds = len(self.values)
        return (
            f"{self.median:,.{digits}f}{unit} (median of {rounds} alternated round{'s' if rounds != 1 else ''}, "
            f"spread {self.low:,.{digits}f}{unit}–{self.high:,.{digits}f}{unit})"
        )


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Ratio:
    """Round i's numerator over round i's denominator, for every round."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("paired_ratio needs two equally long, non-empty lists of measurements")
    return Ratio(tuple(n / d for n, d in zip(numerator, denominator)))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def noise_note(*ratios: Ratio, tolerance: float = 0.10) -> str | None:
    """A warning line when some ratio's spread exceeds ±tolerance around its median."""
    worst = max(r.relative_spread() for r in ratios)
    if worst <= tolerance:
        return None
    return (
        f"note: the per-round ratios spread ±{worst:.0%} around the median (more than ±{tolerance:.0%}): "
        "the machine was busy; rerun on a quiet machine before quoting these figures"
    )
