"""The demo's wall time: this release's `make demo` pipeline against the current one, stage by stage.

Each program is `midtrain reproduce olmo-2-1124-7b` run in a fresh clone of one commit of this
repository (no DVC cache, no data, no compile cache: what a first-time user gets after set-up), with
the installed environment of this checkout (`.venv`) and the clone first on PYTHONPATH, so each
pipeline runs its own code. A `midtrain` shim placed first on PATH times every `midtrain stage NAME`
command that DVC runs, which gives the per-stage table; the total is the wall time of `reproduce`
(DVC's own bookkeeping included). The effects each pipeline reached (held-out math and prose loss,
base -> final) are read from its metrics/eval.json: a faster pipeline only counts if it still meets
the demo's goals (math <= -15%, prose <= +3%).

The baseline defaults to a912297, the last commit before the speed work of this release (issue 16);
the first release (84d3fce) is not a fair baseline on a CPU without native bf16, because it trained
in bf16 unconditionally, which runs about 33x slower than fp32 there. The programs alternate
(baseline, current, baseline, ... --repeats rounds, then the baseline once more), and the ratio
current / baseline is reported per round, as a median with its min-max spread
(benchmarks/_timing.py). One round takes about as long as both pipelines together (10-15 min on 2
cores), so the default is a single round; use --repeats 3 for a figure with a spread.

    python benchmarks/demo_time.py [--baseline COMMIT] [--current COMMIT] [--repeats N] [--json]

The last line with --json: {"ratio": ..., "ratio_spread": [min, max], "baseline_s": [...],
"current_s": [...], "stages": {program: {stage: median seconds}}, "effects": {program: {...}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import add_repeats_argument, alternate, noise_note, paired_ratio  # noqa: E402

BASELINE = "a912297"
RECIPE = "olmo-2-1124-7b"
STAGES = ("plan", "data", "base", "midtrain", "evaluate", "report")
GOALS = {"math": -15.0, "prose": 3.0}  # held-out loss change in percent: math at most, prose at most

SHIM = """#!/bin/sh
# benchmarks/demo_time.py: time each `midtrain stage NAME` that DVC runs, then pass the exit status on
start=$(date +%s.%N)
"{python}" -m midtrain "$@"
status=$?
end=$(date +%s.%N)
if [ "$1" = stage ]; then echo "$2 $start $end" >> "{log}"; fi
exit $status
"""


def run_group(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> int:
    """Run a command in its own process group, output to `log`; on Ctrl-C the whole group goes."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise


def resolve(commit: str) -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=REPO, capture_output=True, text=True
    )
    if found.returncode != 0:
        raise SystemExit(f"demo_time.py: {commit!r} is not a commit of {REPO}: {found.stderr.strip()}")
    return found.stdout.strip()


class Pipeline:
    """One program: a commit's demo from a fresh clone, every time it is measured."""

    def __init__(self, name: str, commit: str, work: Path, python: Path, keep: bool) -> None:
        self.name, self.commit, self.work, self.python, self.keep = name, commit, work, python, keep
        self.stage_seconds: list[dict[str, float]] = []
        self.effects: list[dict[str, float]] = []
        self.runs = 0

    def __call__(self) -> float:
        self.runs += 1
        clone = self.work / f"{self.name}-{self.runs}"
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(clone)], check=True)
        subprocess.run(
            ["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", self.commit], cwd=clone, check=True
        )
        aux = self.work / f"{self.name}-{self.runs}-aux"  # outside the clone: its git tree stays clean
        shim_dir, log = aux / "bin", aux / "stages.log"
        shim_dir.mkdir(parents=True)
        shim = shim_dir / "midtrain"
        shim.write_text(SHIM.format(python=self.python, log=log))
        shim.chmod(0o755)
        cache = aux / "cache"  # compile and other user caches start empty, as on a fresh machine
        env = {
            **os.environ,
            "PYTHONPATH": str(clone),
            "PATH": f"{shim_dir}{os.pathsep}{self.python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "XDG_CACHE_HOME": str(cache),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "TRITON_CACHE_DIR": str(cache / "triton"),
        }
        env.pop("MIDTRAIN_HOME", None)
        output = self.work / f"{self.name}-{self.runs}.log"
        print(
            f"  {self.name} ({self.commit[:9]}): reproducing {RECIPE} in {clone} (output: {output})",
            file=sys.stderr,
            flush=True,
        )
        start = time.perf_counter()
        status = run_group([str(self.python), "-m", "midtrain", "reproduce", RECIPE], clone, env, output)
        seconds = time.perf_counter() - start
        if status != 0:
            tail = output.read_text(errors="replace").splitlines()[-30:]
            raise SystemExit(
                f"demo_time.py: the {self.name} pipeline failed (exit {status}); last lines of {output}:\n"
                + "\n".join(tail)
            )
        self.stage_seconds.append(read_stage_log(log))
        self.effects.append(read_effects(clone / "metrics" / "eval.json"))
        print(
            f"  {self.name}: {seconds:.0f} s; "
            + ", ".join(f"{k} {v:.0f} s" for k, v in self.stage_seconds[-1].items()),
            file=sys.stderr,
            flush=True,
        )
        if not self.keep:
            shutil.rmtree(clone, ignore_errors=True)
        return seconds


def read_stage_log(log: Path) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for line in log.read_text().splitlines():
        name, start, end = line.split()
        seconds[name] = seconds.get(name, 0.0) + float(end) - float(start)
    return seconds


def read_effects(path: Path) -> dict[str, float]:
    """Held-out loss change, base -> final, in percent, for every domain eval.json reports."""
    metrics = json.loads(path.read_text())
    return {domain: round(100 * change, 2) for domain, change in metrics["relative_change"].items()}


def median_stages(rows: list[dict[str, float]]) -> dict[str, float]:
    names = [s for s in STAGES if any(s in r for r in rows)] + sorted({k for r in rows for k in r} - set(STAGES))
    return {name: statistics.median(r.get(name, 0.0) for r in rows) for name in names}


def fmt(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help=f"this release's commit (default {BASELINE})")
    parser.add_argument(
        "--current", default="HEAD", help="the commit to compare (default HEAD; commit your changes first)"
    )
    parser.add_argument(
        "--only", choices=("baseline", "current"), help="time one pipeline alone (its stage table; no ratio)"
    )
    add_repeats_argument(parser, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the clones (for inspecting their outputs)")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args()

    python = Path(sys.executable)
    if shutil.which("dvc", path=str(python.parent)) is None:
        raise SystemExit(
            f"demo_time.py: no dvc next to {python}; run it with the checkout's .venv/bin/python (after `make install`)"
        )
    commits = {"baseline": resolve(args.baseline), "current": resolve(args.current)}
    if args.only:
        commits = {args.only: commits[args.only]}
    work = Path(tempfile.mkdtemp(prefix="midtrain-demo-time-"))
    try:
        programs = {name: Pipeline(name, commit, work, python, args.keep) for name, commit in commits.items()}
        if args.only:
            totals = {args.only: [programs[args.only]() for _ in range(args.repeats)]}
            runs = None
        else:
            runs = alternate(dict(programs), args.repeats)
            totals = {name: runs[name] for name in programs}
    finally:
        if args.keep:
            print(f"the clones are kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    stages = {name: median_stages(p.stage_seconds) for name, p in programs.items()}
    effects = {
        name: {k: statistics.median(e[k] for e in p.effects if k in e) for k in p.effects[0]}
        for name, p in programs.items()
    }
    print()
    header = "| stage | " + " | ".join(f"{n} ({commits[n][:7]})" for n in programs) + " |"
    print(header)
    print("| --- |" + " ---: |" * len(programs))
    for stage in dict.fromkeys(k for s in stages.values() for k in s):
        print(f"| {stage} | " + " | ".join(fmt(stages[n].get(stage, 0.0)) for n in programs) + " |")
    print(
        "| **total (reproduce)** | " + " | ".join(f"**{fmt(statistics.median(totals[n]))}**" for n in programs) + " |"
    )
    for name in programs:
        shown = ", ".join(f"{k} {v:+.1f}%" for k, v in effects[name].items())
        met = all(effects[name].get(k, float("inf")) <= goal for k, goal in GOALS.items())
        print(
            f"{name}: held-out loss change base -> final: {shown} ({'goals met' if met else 'GOALS NOT MET'}: math <= -15%, prose <= +3%)"
        )
    result: dict[str, object] = {"stages": stages, "effects": effects, "commits": commits}
    result.update({f"{n}_s": [round(v, 1) for v in totals[n]] for n in programs})
    if runs is not None:
        ratio = paired_ratio(runs["current"], runs.baseline_for("current"))
        print(f"current / baseline wall time: {ratio.text(3)} (goal <= 0.50)")
        note = noise_note(ratio)
        if note:
            print(note)
        result.update(ratio=round(ratio.median, 3), ratio_spread=ratio.spread())
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
