"""Startup time of the browsing CLI against the bare imports it cannot avoid.

Times `midtrain list` and `python -c "import typer, rich, pydantic"` alternately in one run (the
machine is shared and noisy, so only the ratio of medians means anything) and prints the ratio.
Goal: ratio <= 2.0. Also checks that the browsing path imports none of torch, transformers,
datasets or dvc.

    python benchmarks/cli_startup.py [--repeats 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args()
    python = sys.executable
    midtrain = str(Path(python).with_name("midtrain"))
    env = dict(os.environ, COLUMNS="120")
    list_cmd = [midtrain, "list"] if Path(midtrain).exists() else [python, "-m", "midtrain.cli", "list"]
    base_cmd = [python, "-c", "import typer, rich, pydantic"]
    timed(list_cmd, env)  # warm the parse cache and the OS file cache
    timed(base_cmd, env)
    list_times, base_times = [], []
    for _ in range(args.repeats):
        list_times.append(timed(list_cmd, env))
        base_times.append(timed(base_cmd, env))
    list_median = statistics.median(list_times)
    base_median = statistics.median(base_times)
    heavy = heavy_imports(python, env)
    result = {
        "midtrain_list_s": round(list_median, 4),
        "import_typer_rich_pydantic_s": round(base_median, 4),
        "ratio": round(list_median / base_median, 3),
        "goal": 2.0,
        "heavy_imports": heavy,
        "repeats": args.repeats,
    }
    if not args.json:
        print(f"midtrain list                         median {list_median * 1000:7.1f} ms")
        print(f"python -c 'import typer,rich,pydantic' median {base_median * 1000:7.1f} ms")
        print(f"ratio {result['ratio']:.2f} (goal <= 2.0); heavy imports on the browsing path: {heavy or 'none'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
