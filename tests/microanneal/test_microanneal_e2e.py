"""`midtrain microanneal` end to end through real DVC on a small random base from a test-written hub
cache: the math arm wins on math, reruns do nothing, adding a candidate runs only its units."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.hub import install_in_cache, save_random_model
from tests.test_own_base import REPO, make_project, run

HUB_ID = "test-org/micro-base"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("micro")
    save_random_model(root / "llama", context=64, theta=10_000.0)
    cache = root / "cache"
    install_in_cache(root / "llama", cache, HUB_ID)
    work = make_project(root / "project", cache)
    shutil.copytree(REPO / "microanneal", work / "microanneal", ignore=shutil.ignore_patterns("dvc.lock", ".gitignore"))
    for stale in ("plan", "data", "runs", "units", "unit-specs", "scores", "metrics", "report", "logs"):
        shutil.rmtree(work / "microanneal" / stale, ignore_errors=True)
    run(["git", "add", "-A"], work, cache)
    run(["git", "commit", "-qm", "microanneal"], work, cache)
    return work, cache


ARGS = ["--base", HUB_ID, "--base-peak-lr", "3e-3", "--control", "prose", "--tokens", "30K", "--seeds", "2"]
# lm-eval's offline task beside held-out domains, on 10 documents
EVAL = ["--eval", "prose,code,math,midtrain_math", "--eval-limit", "10"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_microanneal_on_an_own_base(project: tuple[Path, Path]) -> None:
    work, cache = project
    first = run(["midtrain", "microanneal", *ARGS, *EVAL, "--candidate", "math", "--json"], work, cache)
    result = json.loads(first.stdout)  # stdout holds only the JSON; DVC's output went to stderr
    assert set(result) >= {"control", "arms", "benchmarks", "recommendation"}
    math = result["arms"]["math"]["loss"]["math"]
    assert math["verdict"] == "better" and math["delta"] < 0 and len(math["seeds"]) == 2
    assert result["control"]["sources"] == {"prose": 1.0}
    assert result["arms"]["math"]["sources"] == pytest.approx({"prose": 0.7, "math": 0.3})
    assert "math-answer" in result["arms"]["math"]["loss"]
    assert (work / "microanneal" / "report" / "microanneal.md").read_text().count("| math") >= 1
    assert (work / "microanneal" / "report" / "deltas.png").stat().st_size > 5000

    benchmarks = result["benchmarks"]
    assert set(benchmarks) == {"control", "arms"}
    block = benchmarks["arms"]["math"]["midtrain_math/acc,none"]
    assert set(block) >= {"mean", "seeds", "delta", "spread", "verdict", "rank"} and len(block["seeds"]) == 2

    again = run(["midtrain", "microanneal", *ARGS, *EVAL, "--candidate", "math"], work, cache)
    assert "4 of 4 unit(s) cached" in again.stderr
    assert "anneal: " not in again.stderr.replace("anneal: 4 of 4", "")
    assert "Running stage" not in again.stdout.replace("Running stage 'microanneal/dvc.yaml:report'", "")

    more = run(["midtrain", "microanneal", *ARGS, *EVAL, "--candidate", "math", "--candidate", "code"], work, cache)
    assert "4 of 6 unit(s) cached" in more.stderr
    assert "anneal code-s0: done" in more.stderr and "anneal math-s0: done" not in more.stderr
    shown = run(["dvc", "exp", "show", "--json"], work, cache)
    assert "deltas.json" in shown.stdout
