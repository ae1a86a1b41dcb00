"""End to end through the real `dvc` CLI in a temporary git repository, on a shrunken tiny scale."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUICK_TINY = """
tiny:
  description: tiny, shrunk further for the test suite
  hardware: CPU
  model: stand-in
  vocab_size: 512
  base_context: 32
  max_context: 256
  tokens_per_step: 256
  micro_batch_tokens: 256
  base_tokens: 8K
  mid_training_tokens: 3K
  max_runs: 3
  min_steps: 6
  peak_lr: 3.0e-3
  eval_sequences: 8
  precision: fp32
"""


def sh(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        DVC_NO_ANALYTICS="1",
    )
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("recipes", "registry"):
        shutil.copytree(REPO / name, root / name)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, root / name)
    scales = (root / "registry" / "scales.yaml").read_text()
    head, _, rest = scales.partition("tiny:")
    rest = rest[rest.index("\nsmall:") :]
    (root / "registry" / "scales.yaml").write_text(head + QUICK_TINY.strip() + "\n" + rest)
    monkeypatch.delenv("MIDTRAIN_HOME", raising=False)
    sh(["git", "init", "-q"], root)
    sh(["dvc", "init", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "init"], root)
    return root


@pytest.mark.slow
def test_tiny_pipeline_experiments_compare_then_no_op_then_partial_rerun(project: Path, tmp_path: Path) -> None:
    first = sh([str(BIN / "midtrain"), "reproduce", "olmo-2-1124-7b", "--name", "first"], project)
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    for domain in ("math", "prose", "code", "qa"):
        assert set(metrics["loss"][domain]) == {"base", "final"}
    assert set(metrics["position_loss"]) >= {"in_context", "beyond"}
    assert metrics["retrieval"] and all(set(v) == {"base", "final"} for v in metrics["retrieval"].values())
    assert first.stdout.count("held-out loss") == 1  # the table once, at the end
    for plot in ("loss_and_lr.png", "domains.png", "long_context.png", "mixture.png", "summary.md", "curves.csv"):
        assert (project / "report" / plot).exists(), plot
    soup = project / "runs" / "olmo-2-1124-7b" / "mid" / "soup"
    assert (soup / "merge.json").exists() and len(json.loads((soup / "merge.json").read_text())["merged_from"]) == 3
    assert json.loads((soup / "config.json").read_text())["use_cache"] is True
    assert (project / "logs" / "third-party.log").exists()

    again = sh(["dvc", "repro"], project)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout

    changed = sh(
        [
            str(BIN / "midtrain"),
            "reproduce",
            "olmo-2-1124-7b",
            "--name",
            "second",
            "--set",
            "stages.anneal.mixture.components[dolmino-math].share=0.308",
            "--set",
            "stages.anneal.mixture.components[dolmino-dclm].share=0.372",
        ],
        project,
    )
    out = changed.stdout
    assert "Stage 'data' didn't change" in out and "Stage 'base' didn't change" in out
    for stage in ("plan", "midtrain", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out, stage
    assert "soup: merged" in out

    # both experiments carry their metrics; DVC compares them
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], project).stdout)
    experiments = {
        rev.get("name"): rev
        for entry in shown
        for exp in (entry.get("experiments") or [])
        for rev in exp.get("revs", [])
    }
    for name in ("first", "second"):
        data = experiments[name]["data"]["metrics"]["metrics/eval.json"]["data"]
        assert data["loss"]["math"]["final"] > 0, name
    diff = sh(["dvc", "metrics", "diff", "first", "second"], project).stdout
    assert "loss.math.final" in diff and "failed" not in diff
    compared = sh([str(BIN / "midtrain"), "compare-runs", "first", "second"], project)
    assert "held-out loss" in compared.stdout and (project / "compare" / "first-vs-second.png").exists()

    # dvc plots show renders offline: image plots, no script from a CDN
    sh(["dvc", "plots", "show", "--out", "dvc_plots"], project)
    html = (project / "dvc_plots" / "index.html").read_text()
    assert "<img" in html and not re.search(r"<script[^>]+src=\"https?://", html)
    from tests.test_browser import CHROMIUM, browse

    if CHROMIUM:
        probe = project / "dvc_plots" / "probe.html"
        probe.write_text(
            html.replace(
                "</body>",
                "<script>addEventListener('load', () => document.body.setAttribute('data-widths', "
                "[...document.images].map(i => i.naturalWidth).join(',')))</script></body>",
            )
        )
        dom = browse(probe.as_uri(), tmp_path / "profile", "--dump-dom")
        widths = re.search(r'data-widths="([^"]*)"', dom)
        assert widths and all(int(w) > 200 for w in widths.group(1).split(",")), dom[-2000:]


def test_reproduce_bad_input(project: Path, tmp_path: Path) -> None:
    unknown = sh([str(BIN / "midtrain"), "reproduce", "olmo-2-7b"], project, check=False)
    assert unknown.returncode == 2 and "did you mean" in unknown.stderr and "olmo-2-1124-7b" in unknown.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    not_git = sh([str(BIN / "midtrain"), "reproduce", "olmo-2-1124-7b"], bare, check=False)
    assert not_git.returncode == 2 and "not a git repository" in not_git.stderr
    sh(["git", "init", "-q"], bare)
    no_commit = sh([str(BIN / "midtrain"), "reproduce", "olmo-2-1124-7b"], bare, check=False)
    assert "no commit yet" in no_commit.stderr
    shutil.rmtree(project / ".dvc")
    no_dvc = sh([str(BIN / "midtrain"), "reproduce", "olmo-2-1124-7b"], project, check=False)
    assert "not a DVC project" in no_dvc.stderr and "Traceback" not in no_dvc.stderr


@pytest.mark.slow
def test_sigterm_to_reproduce_stops_every_child_and_a_rerun_resumes(project: Path) -> None:
    """`midtrain reproduce` forwards SIGTERM to dvc and the training run it started, and waits for
    them: nothing keeps writing after it exits. Running it again finishes the pipeline."""
    import signal
    import time

    import psutil

    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    process = subprocess.Popen(
        [str(BIN / "midtrain"), "reproduce", "olmo-2-1124-7b", "--repro"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = ""
    deadline = time.monotonic() + 300
    assert process.stdout is not None
    while "Running stage 'base'" not in seen and time.monotonic() < deadline:
        seen += process.stdout.readline()
    time.sleep(3)  # into the base's training run (a grandchild of dvc)
    children = psutil.Process(process.pid).children(recursive=True)
    assert children, seen
    process.send_signal(signal.SIGTERM)  # to reproduce alone, as a scheduler or `kill` would
    process.communicate(timeout=120)
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert process.returncode != 0
    sh([str(BIN / "midtrain"), "reproduce", "olmo-2-1124-7b", "--repro"], project)
    assert (project / "metrics" / "eval.json").exists()
