"""Startup time of the browsing CLI against the bare imports it cannot avoid.

Times `python -c "import typer, rich, pydantic"` and `midtrain list` alternately (A B A B ... A,
--repeats rounds, each command run --per-round times per round and their mean taken), forms one
ratio per round and prints the MEDIAN ratio and its min–max spread (benchmarks/_timing.py).
Goal: ratio <= 2.0. Also checks that the browsing path imports none of torch, transformers,
datasets or dvc.

    python benchmarks/cli_startup.py [--repeats 5] [--per-round 4] [--json]

The last line is JSON: {"ratio_vs_bare_imports", "ratio_spread": [min, max], ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import add_repeats_argument, alternate, median, noise_note, paired_ratio

HEAVY = ("torch", "transformers", "datasets", "dvc")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def heavy_imports(python: str, env: dict[str, str]) -> list[str]:
    """Top-level heavy packages imported while running `midtrain list` (from -X importtime)."""
    code = "import sys; sys.argv=['midtrain','list']; from midtrain.cli import main; main()"
    proc = subprocess.run([python, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env)
    found = set()
    for line in proc.stderr.splitlines():
        name = line.rsplit("|", 1)[-1].strip()
        if name.split(".")[0] in HEAVY:
            found.add(name.split(".")[0])
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_repeats_argument(parser)
    parser.add_argument(
        "--per-round",
        type=int,
        default=4,
        help="invocations of each command per round (their mean is the round's time)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    python = sys.executable
    midtrain = str(Path(python).with_name("midtrain"))
    env = dict(os.environ, COLUMNS="120")
    list_cmd = [midtrain, "list"] if Path(midtrain).exists() else [python, "-m", "midtrain.cli", "list"]
    base_cmd = [python, "-c", "import typer, rich, pydantic"]
    per_round = max(1, args.per_round)

    def program(cmd: list[str]):  # type: ignore[no-untyped-def]
        return lambda: sum(timed(cmd, env) for _ in range(per_round)) / per_round

    # one discarded round warms the bytecode and the OS file caches for both commands
    # the baseline runs first in each round and once more at the end: B A B A ... B
    times = alternate(
        {"bare imports": program(base_cmd), "midtrain list": program(list_cmd)},
        args.repeats,
        warmup_rounds=1,
        progress=not args.json,
    )
    ratio = paired_ratio(times["midtrain list"], times.baseline_for("midtrain list"))
    heavy = heavy_imports(python, env)
    result = {
        "ratio_vs_bare_imports": round(ratio.median, 3),
        "ratio_spread": ratio.spread(),
        "ratios": [round(v, 3) for v in ratio.values],
        "midtrain_list_s": round(median(times["midtrain list"]), 4),
        "import_typer_rich_pydantic_s": round(median(times["bare imports"]), 4),
        "goal": 2.0,
        "heavy_imports": heavy,
        "repeats": args.repeats,
        "per_round": per_round,
    }
    if not args.json:
        print(f"midtrain list                          median {result['midtrain_list_s'] * 1000:7.1f} ms")
        print(f"python -c 'import typer,rich,pydantic'  median {result['import_typer_rich_pydantic_s'] * 1000:7.1f} ms")
        print(f"ratio {ratio.text()} (goal <= 2.0); heavy imports on the browsing path: {heavy or 'none'}")
        note = noise_note(ratio)
        if note:
            print(note)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
