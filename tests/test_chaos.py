"""Chaos: every long writer (prepare, train, merge, evaluate, report) is SIGKILLed at several
moments and run again; the result equals a clean run's, byte for byte where the output is
deterministic, and no temporary of the killed writer is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DELAYS = (
    0.8,
    2.0,
    4.0,
)  # seconds after start: import time, mid-work, near the end (where each lands varies; any must do)


def _start(writer: str, args: dict[str, Any], work: Path) -> subprocess.Popen:
    spec = work / f"{writer}-{time.monotonic_ns()}.json"
    spec.write_text(json.dumps(args))
    env = dict(os.environ, MIDTRAIN_THREADS="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.chaos_writers", writer, str(spec)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _complete(writer: str, args: dict[str, Any], work: Path) -> None:
    process = _start(writer, args, work)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"{writer} failed:\n{out[-2000:]}\n{err[-3000:]}"


def _kill_then_rerun(writer: str, args: dict[str, Any], work: Path, delay: float) -> None:
    process = _start(writer, args, work)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    process.communicate()
    _complete(writer, args, work)


def _files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part in skip for part in p.relative_to(root).parts)
    }


def _no_temporaries(root: Path) -> None:
    left = [
        str(p)
        for p in root.rglob("*")
        if p.name.endswith(".tmp") or (p.name.startswith(".") and p.name.endswith(".old"))
    ]
    assert not left, left


@pytest.mark.slow
def test_prepare_killed_anywhere_reruns_to_the_clean_result(tmp_path: Path) -> None:
    _complete("prepare", {"out": str(tmp_path / "clean")}, tmp_path)
    clean = _files(tmp_path / "clean")
    assert json.loads(clean["decontam.json"])["sources"]
    for delay in DELAYS:
        out = tmp_path / f"killed-{delay}"
        _kill_then_rerun("prepare", {"out": str(out)}, tmp_path, delay)
        assert _files(out) == clean, delay
        _no_temporaries(tmp_path)


@pytest.mark.slow
def test_train_merge_evaluate_report_killed_anywhere_rerun_to_the_clean_result(prepared: Path, tmp_path: Path) -> None:
    from tests.train.conftest import make_spec

    # train: the final weights are bitwise those of an uninterrupted run
    runs = {}
    for seed in (0, 1):
        spec = make_spec(prepared, tmp_path / f"clean-{seed}", steps=16, checkpoint_every=2, seed=seed, data_seed=seed)
        _complete("train", {"spec": spec}, tmp_path)
        runs[seed] = tmp_path / f"clean-{seed}" / "model"
    clean_weights = (runs[0] / "model.safetensors").read_bytes()
    for delay in DELAYS[1:]:
        spec = make_spec(prepared, tmp_path / f"killed-{delay}", steps=16, checkpoint_every=2, seed=0, data_seed=0)
        _kill_then_rerun("train", {"spec": spec}, tmp_path, delay)
        assert (tmp_path / f"killed-{delay}" / "model" / "model.safetensors").read_bytes() == clean_weights, delay
        _no_temporaries(tmp_path / f"killed-{delay}")

    # merge
    merge = {"inputs": [str(runs[0]), str(runs[1])], "out": str(tmp_path / "soup-clean")}
    _complete("merge", merge, tmp_path)
    clean_soup = _files(tmp_path / "soup-clean")
    for delay in DELAYS[:2]:
        _kill_then_rerun("merge", {**merge, "out": str(tmp_path / f"soup-{delay}")}, tmp_path, delay)
        assert _files(tmp_path / f"soup-{delay}") == clean_soup, delay
    _no_temporaries(tmp_path)

    # evaluate: the same metrics, both files complete
    config = {
        "kind": "stand_in",
        "base": {"path": str(runs[0])},
        "final": {"path": str(tmp_path / "soup-clean")},
        "data": str(prepared),
        "domains": {"prose": "prose.heldout", "math": "math.heldout"},
        "sequence_length": 32,
        "sequences": 4,
        "position": {"stream": "longdoc.heldout", "length": 64, "base_context": 32},
        "math_problems": 4,
        "math_max_new_tokens": 8,
        "retrieval_lengths": [32, 64],
        "retrieval_documents": 2,
    }
    _complete("evaluate", {"config": config, "root": "/", "out": str(tmp_path / "m-clean" / "eval.json")}, tmp_path)
    clean_metrics = _files(tmp_path / "m-clean")
    for delay in DELAYS[:2]:
        out = tmp_path / f"m-{delay}" / "eval.json"
        _kill_then_rerun("evaluate", {"config": config, "root": "/", "out": str(out)}, tmp_path, delay)
        assert _files(out.parent) == clean_metrics, delay

    # report: the same summary and curves; every plot present
    from midtrain.catalog import load_catalog
    from midtrain.plan.planner import plan_recipe

    plan = plan_recipe(load_catalog().get("olmo-2-1124-7b"), load_catalog().registry, "tiny")
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_json()))
    report = {
        "root": str(tmp_path),
        "plan": str(tmp_path / "plan.json"),
        "metrics": str(tmp_path / "m-clean" / "eval.json"),
    }
    _complete("report", {**report, "out": str(tmp_path / "r-clean")}, tmp_path)
    clean_report = _files(tmp_path / "r-clean")
    for delay in DELAYS[:2]:
        out = tmp_path / f"r-{delay}"
        _kill_then_rerun("report", {**report, "out": str(out)}, tmp_path, delay)
        produced = _files(out)
        assert set(produced) == set(clean_report), delay
        for name in ("summary.md", "curves.csv"):
            assert produced[name] == clean_report[name], (delay, name)
    _no_temporaries(tmp_path)
