"""The long writers, each runnable as `python -m tests.chaos_writers WRITER ARGS.json`, so that the
chaos test can SIGKILL one at any moment and run it again (tests/test_chaos.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def prepare(args: dict[str, Any]) -> None:
    from midtrain.data.prepare import PrepareOptions, prepare_tiny
    from tests.conftest import SMALL

    prepare_tiny(PrepareOptions(out=Path(args["out"]), vocab_size=512, sizes=SMALL, progress=False))


def train(args: dict[str, Any]) -> None:
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train as run

    run(RunSpec.model_validate(args["spec"]), progress=False)


def merge(args: dict[str, Any]) -> None:
    from midtrain.train.merge import merge_models

    merge_models([Path(p) for p in args["inputs"]], Path(args["out"]), None)


def evaluate(args: dict[str, Any]) -> None:
    from midtrain.evaluate import evaluate as run
    from midtrain.io import remove_stale_temporaries, write_json
    from midtrain.plan.contract import StandInEval

    config = StandInEval.model_validate(args["config"])
    out = Path(args["out"])
    remove_stale_temporaries(out.parent)
    results = run(config, Path(args["root"]), progress=False)
    write_json(out.with_name("position_curve.json"), results["position_curve"])
    write_json(out, {k: v for k, v in results.items() if k != "position_curve"})


def report(args: dict[str, Any]) -> None:
    from midtrain.report import build_report

    build_report(Path(args["root"]), Path(args["plan"]), Path(args["metrics"]), Path(args["out"]))


WRITERS = {"prepare": prepare, "train": train, "merge": merge, "evaluate": evaluate, "report": report}

if __name__ == "__main__":
    os.environ.setdefault("MIDTRAIN_THREADS", "1")
    WRITERS[sys.argv[1]](json.loads(Path(sys.argv[2]).read_text()))
