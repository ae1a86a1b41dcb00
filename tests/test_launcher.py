"""`midtrain reproduce --launcher slurm`: the batch script, exactly, and the submit / follow / resubmit
logic against stand-ins for Slurm's commands (tests/fake_slurm.py) that follow their command-line
contract. Slurm itself is not installed here: what is tested is midtrain's side of that contract, and,
in the slow test, that the script it writes really starts a two-"node" torchrun rendezvous (both
agents on this machine) that trains, is killed after a checkpoint, is resubmitted, requeued, and
resumes to the end."""

from __future__ import annotations

import _thread
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from midtrain.errors import MidtrainError
from midtrain.launch import (
    LAUNCH_ENV,
    JobFiles,
    Polling,
    launch_choice,
    launch_from_env,
    render_script,
    run_on_slurm,
    slurm_settings,
)
from tests import fake_slurm
from tests.test_pipeline import BIN, project  # noqa: F401  (the temporary DVC project fixture)

FAST = Polling(first=0.01, most=0.03, factor=1.5, tail=0.005, give_up=3)
ODD_ROOT = Path('/lab/it\'s a "$dir" 100%')

GOLDEN = r"""#!/bin/bash
# midtrain: training run anneal-0, 2 nodes × 4 GPUs. Written by `midtrain reproduce --launcher
# slurm`, which submits it with `sbatch --parsable` and follows the job; submitting it again by hand
# resumes the run from its last checkpoint in the run directory.
#SBATCH --job-name=midtrain-anneal-0
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --partition=gpu
#SBATCH --account=proj-42
#SBATCH --time=1-00:00:00
#SBATCH --output="/lab/it's a \"$dir\" 100%%/runs/olmo/mid/anneal-0/slurm/job-%j.out"
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --qos=high
#SBATCH --exclusive
#SBATCH --comment="run \"A\" #1 \\ done"
set -euo pipefail
cd '/lab/it'"'"'s a "$dir" 100%'
export PYTHONUNBUFFERED=1
# srun passes the job's CPUs on to its step only when told to (Slurm 22.05 and later)
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"; fi
# one torchrun agent per node; they meet at the first node (c10d rendezvous, id = the job id)
nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes%%$'\n'*}
port=$(( 20000 + SLURM_JOB_ID % 10000 ))
echo "midtrain: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST, rendezvous $head_node:$port"
srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  '/opt/my venv/bin/python' -m torch.distributed.run \
  --nnodes="$SLURM_NNODES" --nproc-per-node=4 \
  --rdzv-backend=c10d --rdzv-endpoint="$head_node:$port" --rdzv-id="$SLURM_JOB_ID" \
  -m midtrain.train.entry '/lab/it'"'"'s a "$dir" 100%/runs/olmo/mid/.specs/anneal-0.json'
"""


def golden_job() -> tuple[Any, JobFiles]:
    settings = slurm_settings(
        nodes=2,
        gpus_per_node=4,
        partition="gpu",
        account="proj-42",
        time="1-00:00:00",
        slurm_args=["qos=high", "exclusive", 'comment=run "A" #1 \\ done'],
    )
    files = JobFiles(
        root=ODD_ROOT,
        spec=ODD_ROOT / "runs/olmo/mid/.specs/anneal-0.json",
        out=ODD_ROOT / "runs/olmo/mid/anneal-0",
        name="anneal-0",
        python="/opt/my venv/bin/python",
    )
    return settings, files


# ---------------------------------------------------------------- the script


def test_batch_script_for_two_nodes_of_four_gpus_is_exactly_this() -> None:
    settings, files = golden_job()
    assert settings.nproc_per_node == 4
    assert render_script(settings, files) == GOLDEN


def test_sbatch_reads_the_header_back_as_written() -> None:
    """The #SBATCH lines parsed by the rules of sbatch's script parser give back each value: the
    path with its quote, `$` and space, `%` doubled for the log pattern, a comment holding quotes,
    `#` and a backslash."""
    options = fake_slurm.sbatch_options(GOLDEN)
    assert options["output"] == '/lab/it\'s a "$dir" 100%%/runs/olmo/mid/anneal-0/slurm/job-%j.out'
    assert fake_slurm.log_path(str(options["output"]), "77") == f"{ODD_ROOT}/runs/olmo/mid/anneal-0/slurm/job-77.out"
    assert options["comment"] == 'run "A" #1 \\ done'
    assert options["requeue"] is None and options["exclusive"] is None
    assert options["nodes"] == "2" and options["gpus-per-node"] == "4" and options["time"] == "1-00:00:00"
    assert "cd" not in options  # parsing stopped at the first command


def test_the_script_body_hands_bash_the_paths_unchanged(tmp_path: Path) -> None:
    """bash runs the script with stand-in srun and scontrol that print what they were given: the
    working directory and the spec path arrive intact, the rendezvous is at the first node."""
    root = tmp_path / 'it\'s a "$dir" 100%'
    root.mkdir()
    settings = slurm_settings(nodes=2, gpus_per_node=4)
    files = JobFiles(root=root, spec=root / "a b" / "run.json", out=root / "out", name="r", python="/usr/bin/env")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho gpu-node-7\necho gpu-node-8\n")
    (bin_dir / "srun").write_text(
        f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
        "'import json, os, sys; print(json.dumps([os.getcwd(), *sys.argv[1:]]))' \"$@\"\n"
    )
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(render_script(settings, files))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="4242", SLURM_NNODES="2")
    env["SLURM_JOB_NODELIST"] = "gpu-node-[7-8]"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "midtrain: job 4242 (restart 0) on gpu-node-[7-8], rendezvous gpu-node-7:24242"
    cwd, *argv = json.loads(lines[1])
    assert cwd == str(root)
    assert argv == [
        "--nodes=2",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        "/usr/bin/env",
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=4",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu-node-7:24242",
        "--rdzv-id=4242",
        "-m",
        "midtrain.train.entry",
        str(root / "a b" / "run.json"),
    ]


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "where", "words"),
    [
        ({"nodes": 0}, "--nodes", "at least one node"),
        ({"time": "25h"}, "--time", "not a Slurm time limit"),
        ({"partition": "gpu queue"}, "--partition", "not a Slurm partition name"),
        ({"account": "a\nb"}, "--account", "not a Slurm account name"),
        ({"slurm_args": ["output=x.log"]}, "--slurm-arg", "midtrain sets `output` itself"),
        ({"slurm_args": ["--nodes=3"]}, "--slurm-arg", "use --nodes"),
        ({"slurm_args": ["Q=high"]}, "--slurm-arg", "not an sbatch option"),
        ({"slurm_args": ["comment=a\nb"]}, "--slurm-arg", "line break"),
        ({"gpus_per_node": 4, "nproc_per_node": 2}, "--nproc-per-node", "one process per GPU"),
        ({"gpus_per_node": 99}, "--gpus-per-node", "out of range"),
        ({"max_retries": -1}, "--max-retries", "out of range"),
    ],
)
def test_bad_slurm_options_name_the_option(options: dict[str, Any], where: str, words: str) -> None:
    with pytest.raises(MidtrainError) as caught:
        slurm_settings(**options)
    problem = caught.value.problems[0]
    assert problem.path == where and words in problem.message and problem.expected
    assert problem.found is not None


def test_local_launcher_keeps_todays_behaviour_and_refuses_slurm_options() -> None:
    assert launch_choice("local") == (1, None)
    assert launch_choice("local", nproc_per_node=4) == (4, None)
    for options, where in (
        ({"nodes": 2}, "--nodes"),
        ({"partition": "gpu"}, "--partition"),
        ({"slurm_args": ["qos=x"]}, "--slurm-arg"),
    ):
        with pytest.raises(MidtrainError) as caught:
            launch_choice("local", **options)
        assert caught.value.problems[0].path == where
    with pytest.raises(MidtrainError, match="unknown launcher"):
        launch_choice("kubernetes")
    assert launch_from_env({}) is None


def test_slurm_without_sbatch_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MidtrainError) as caught:
        launch_choice("slurm", nodes=2, gpus_per_node=8)
    text = caught.value.render()
    assert "sbatch, squeue, sacct, scancel are not there" in text
    assert "login node" in text and "--launcher local" in text


def test_reproduce_refuses_bad_launcher_options_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from midtrain.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(app, ["reproduce", "olmo-2-1124-7b", "--launcher", "slurm"], env={"PATH": str(tmp_path)})
    assert missing.exit_code == 2 and "sbatch" in missing.output and "Traceback" not in missing.output
    bad = runner.invoke(app, ["reproduce", "olmo-2-1124-7b", "--nodes", "2"])
    assert bad.exit_code == 2 and "--nodes" in bad.output and "--launcher slurm" in bad.output
    late = runner.invoke(app, ["reproduce", "olmo-2-1124-7b", "--launcher", "slurm", "--time", "2 days"])
    assert late.exit_code == 2 and "--time: not a Slurm time limit" in late.output
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_launch_settings_travel_through_the_environment() -> None:
    settings, _ = golden_job()
    assert launch_from_env({LAUNCH_ENV: settings.to_env()}) == settings
    for text in ("{", "[1]", '{"nodes": 0}', '{"nodes": 2, "cluster": "x"}'):
        with pytest.raises(MidtrainError, match=LAUNCH_ENV):
            launch_from_env({LAUNCH_ENV: text})


# ---------------------------------------------------------------- submit, follow, resubmit


class FakeSlurm:
    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder, self.state = folder, folder / "state.json"
        self.bin = folder / "bin"
        monkeypatch.setenv("PATH", f"{self.bin}:{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_SLURM_STATE", str(self.state))
        # job ids (and so rendezvous ports, 20000 + id % 10000) in a block of 20 of this test process's own
        self.first_id = 31000 + os.getpid() % 350 * 20

    def play(self, *scenarios: dict[str, Any]) -> None:
        fake_slurm.install(self.bin, self.state, list(scenarios), self.first_id)

    def read(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())

    def calls(self, command: str) -> list[list[str]]:
        return [call[1:] for call in self.read()["calls"] if call[0] == command]

    def cleanup(self) -> None:
        if self.state.exists():
            for job in self.read()["jobs"].values():
                for pid in (job.get("runner"), job.get("group")):
                    if pid:
                        fake_slurm.kill_tree(pid)


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    fake = FakeSlurm(tmp_path / "slurm", monkeypatch)
    yield fake
    fake.cleanup()


def job(tmp_path: Path) -> JobFiles:
    root = tmp_path / "project"
    return JobFiles(root=root, spec=root / "spec.json", out=root / "runs" / "anneal-0", name="anneal-0")


def test_pending_running_completed(slurm: FakeSlurm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = job(tmp_path)
    slurm.play({"states": ["PENDING", "PENDING", "RUNNING", "RUNNING", "COMPLETED"], "log": ["step 1/4", "step 4/4"]})
    run_on_slurm(slurm_settings(nodes=2, gpus_per_node=4), files, FAST)
    job_id = str(slurm.first_id)
    assert slurm.calls("sbatch") == [["--parsable", str(files.script)]]
    assert files.script.read_text() == render_script(slurm_settings(nodes=2, gpus_per_node=4), files)
    assert not slurm.calls("scancel")
    record = json.loads(files.record.read_text())
    assert record["jobs"] == [job_id] and record["state"] == "COMPLETED"
    out = capsys.readouterr().out
    assert f"anneal-0: submitted Slurm job {job_id} (2 nodes × 4 GPUs)" in out
    assert f"Slurm job {job_id} pending (Priority)" in out and "running on node[01-02]" in out
    assert "step 1/4\nstep 4/4\n" in out  # the job's log, relayed
    assert out.index("step 4/4") < out.index(f"Slurm job {job_id} completed")


def test_preempted_job_is_resubmitted(slurm: FakeSlurm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = job(tmp_path)
    slurm.play({"states": ["RUNNING", "PREEMPTED"]}, {"states": ["PENDING", "RUNNING", "COMPLETED"]})
    run_on_slurm(slurm_settings(), files, FAST)
    first, second = str(slurm.first_id), str(slurm.first_id + 1)
    assert len(slurm.calls("sbatch")) == 2
    assert slurm.calls("scancel") == [[first]]  # made sure it is gone before its successor
    assert json.loads(files.record.read_text())["jobs"] == [first, second]
    out = capsys.readouterr().out
    assert f"Slurm job {first} ended PREEMPTED; resubmitting (retry 1 of 3)" in out


def test_requeued_job_is_followed_not_resubmitted(
    slurm: FakeSlurm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = job(tmp_path)
    slurm.play({"states": ["RUNNING", "PENDING", "RUNNING", "COMPLETED"]})
    run_on_slurm(slurm_settings(), files, FAST)
    assert len(slurm.calls("sbatch")) == 1
    assert "requeued by Slurm (preempted, or a node failed)" in capsys.readouterr().out


def test_a_failing_job_without_progress_stops_after_one_retry(slurm: FakeSlurm, tmp_path: Path) -> None:
    files = job(tmp_path)
    files.folder.mkdir(parents=True)
    slurm.play(*[{"states": ["RUNNING", "FAILED"], "exit": "2:0", "log": ["error: something broke"]}] * 5)
    with pytest.raises(MidtrainError) as caught:
        run_on_slurm(slurm_settings(max_retries=4), files, FAST)
    second = str(slurm.first_id + 1)
    assert len(slurm.calls("sbatch")) == 2
    problem = caught.value.problems[0]
    assert problem.file == files.log(second)
    assert f"Slurm job {second} ended FAILED twice in a row without writing a new checkpoint" in problem.message
    assert "(exit code 2:0)" in problem.message and "error: something broke" in problem.message


def test_failures_that_make_progress_are_bounded_by_max_retries(slurm: FakeSlurm, tmp_path: Path) -> None:
    files = job(tmp_path)
    scenario = {"states": ["RUNNING", "FAILED"], "checkpoint": str(files.out / "checkpoints")}
    slurm.play(*[scenario] * 5)
    with pytest.raises(MidtrainError, match="--max-retries 2 allows no more resubmissions") as caught:
        run_on_slurm(slurm_settings(max_retries=2), files, FAST)
    assert len(slurm.calls("sbatch")) == 3
    assert f"Slurm job {slurm.first_id + 2} ended FAILED" in caught.value.render()
    assert "exit code 1:0" in caught.value.render()  # from sacct, as squeue does not say


def test_time_slices_that_make_progress_cost_no_retry(
    slurm: FakeSlurm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run longer than --time goes on in job after job; only slices without progress would count."""
    files = job(tmp_path)
    sliced = {"states": ["RUNNING", "TIMEOUT"], "checkpoint": str(files.out / "checkpoints")}
    slurm.play(*[sliced] * 4, {"states": ["RUNNING", "COMPLETED"]})
    run_on_slurm(slurm_settings(time="4:00:00", max_retries=1), files, FAST)
    assert len(slurm.calls("sbatch")) == 5
    out = capsys.readouterr().out
    assert (
        "ended TIMEOUT; resubmitting (it moved the run on: no retry counted); it resumes from checkpoint step 4" in out
    )


def test_a_job_that_left_the_queue_is_looked_up_in_accounting(slurm: FakeSlurm, tmp_path: Path) -> None:
    slurm.play({"states": ["RUNNING"], "vanish_after": 2, "final": "COMPLETED"})
    run_on_slurm(slurm_settings(), job(tmp_path), FAST)
    assert slurm.calls("sacct")


def test_a_job_slurm_forgets_is_an_error(slurm: FakeSlurm, tmp_path: Path) -> None:
    slurm.play({"states": ["RUNNING"], "vanish_after": 1, "no_accounting": True})
    with pytest.raises(MidtrainError, match=f"Slurm has no job {slurm.first_id} .*any more") as caught:
        run_on_slurm(slurm_settings(), job(tmp_path), FAST)
    text = caught.value.render()
    assert "squeue: slurm_load_jobs error: Invalid job id specified" in text
    assert "sacct: sacct: error: Slurm accounting storage is disabled" in text and "Is job accounting" in text


def test_a_job_cancelled_by_someone_else_is_not_resubmitted(slurm: FakeSlurm, tmp_path: Path) -> None:
    slurm.play({"states": ["RUNNING", "CANCELLED"]})
    with pytest.raises(MidtrainError, match="was cancelled outside midtrain"):
        run_on_slurm(slurm_settings(), job(tmp_path), FAST)
    assert len(slurm.calls("sbatch")) == 1


def test_sbatch_refusing_the_job_is_a_clear_error(slurm: FakeSlurm, tmp_path: Path) -> None:
    slurm.play({"refuse": "invalid partition specified: h100"})
    files = job(tmp_path)
    with pytest.raises(MidtrainError) as caught:
        run_on_slurm(slurm_settings(partition="h100"), files, FAST)
    assert caught.value.problems[0].file == files.script
    assert "invalid partition specified: h100" in caught.value.problems[0].message


def interrupt_once_followed(slurm: FakeSlurm) -> None:
    """Ctrl-C (KeyboardInterrupt in the main thread) once midtrain has queried the job."""

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not slurm.calls("squeue"):
            time.sleep(0.01)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()


def test_ctrl_c_cancels_the_job(slurm: FakeSlurm, tmp_path: Path) -> None:
    import signal

    slurm.play({"states": ["PENDING"]})
    # Python's own Ctrl-C handler, whatever an earlier test in this worker process left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        interrupt_once_followed(slurm)
        with pytest.raises(KeyboardInterrupt):
            run_on_slurm(slurm_settings(), job(tmp_path), FAST)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert slurm.calls("scancel") == [[str(slurm.first_id)]]
    assert slurm.read()["jobs"][str(slurm.first_id)]["state"] == "CANCELLED"


def test_sigterm_cancels_the_job(slurm: FakeSlurm, tmp_path: Path) -> None:
    slurm.play({"states": ["RUNNING"]})
    files = job(tmp_path)
    code = (
        "import sys; from pathlib import Path; from midtrain.launch import *; "
        f"run_on_slurm(slurm_settings(), JobFiles(Path({str(files.root)!r}), Path('s.json'), "
        f"Path({str(files.out)!r}), 'anneal-0'), Polling(0.01, 0.03, 1.5, 0.005, 3))"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (slurm.state.exists() and slurm.calls("squeue")):
        time.sleep(0.01)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert f"cancelled Slurm job {slurm.first_id}" in stderr
    assert slurm.calls("scancel") == [[str(slurm.first_id)]]


def test_a_rerun_follows_the_run_s_live_job_instead_of_submitting_another(
    slurm: FakeSlurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from midtrain import launch

    files = job(tmp_path)
    settings = slurm_settings()
    slurm.play({"states": ["RUNNING"]}, {"states": ["COMPLETED"]})
    # the first session submits, then dies without cancelling the job (as when its login shell is killed)
    with monkeypatch.context() as patch:
        patch.setattr(launch, "cancel", lambda job_id: None)
        interrupt_once_followed(slurm)
        with pytest.raises(KeyboardInterrupt):
            run_on_slurm(settings, files, FAST)
    state = slurm.read()  # from now on, the job runs to its end
    state["jobs"][str(slurm.first_id)].update(scenario={"states": ["RUNNING", "RUNNING", "COMPLETED"]}, polls=0)
    slurm.state.write_text(json.dumps(state))
    with pytest.raises(MidtrainError, match=f"job {slurm.first_id} of training run anneal-0 is still running"):
        run_on_slurm(slurm_settings(nodes=2), files, FAST)  # with other settings: refused, not doubled
    run_on_slurm(settings, files, FAST)
    assert len(slurm.calls("sbatch")) == 1 and not slurm.calls("scancel")
    assert f"Slurm job {slurm.first_id} of this run is still running; following it" in capsys.readouterr().out


# ---------------------------------------------------------------- the real thing, on this machine


@pytest.mark.slow
def test_a_slurm_run_trains_on_two_nodes_resubmits_and_resumes_after_requeue(
    slurm: FakeSlurm,
    prepared: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the pipeline's `_run_training`: the generated script runs under bash with srun
    starting one real torchrun agent per "node" (both here, on loopback) that meet through the c10d
    rendezvous and train with 2 gloo ranks. The first job is SIGKILLed after its first checkpoint
    and ends PREEMPTED, so midtrain resubmits; the second is SIGKILLed later and requeued by "Slurm"
    under the same id. The run ends at its last step, resumed, with every step logged once."""
    from midtrain.pipeline import _run_training
    from tests.train.conftest import losses, make_spec

    root = tmp_path / 'it\'s a "$lab" 100%'
    out = root / "runs" / "demo" / "mid" / "anneal-0"
    spec_path = root / "runs" / "demo" / "mid" / ".specs" / "anneal-0.json"
    spec_path.parent.mkdir(parents=True)
    spec_path.write_text(json.dumps(make_spec(prepared, out, steps=16, checkpoint_every=2, name="demo/anneal-0")))
    watch = str(out / "checkpoints")
    slurm.play(
        {"run": True, "kill_at_step": 2, "watch": watch},
        {"run": True, "kill_at_step": 8, "watch": watch, "requeue": True},
    )
    monkeypatch.setenv(LAUNCH_ENV, slurm_settings(nodes=2, nproc_per_node=1).to_env())
    monkeypatch.setenv("MIDTRAIN_SLURM_POLL", "0.05,0.2")
    _run_training(spec_path, root)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["resumed"] is True and summary["steps"] == 16
    assert len(losses(out)) == 16
    first, second = str(slurm.first_id), str(slurm.first_id + 1)
    record = json.loads((out / "slurm" / "job.json").read_text())
    assert record["jobs"] == [first, second] and record["state"] == "COMPLETED"
    assert "(restart 1)" in (out / "slurm" / f"job-{second}.out").read_text()
    printed = capsys.readouterr().out
    assert f"Slurm job {first} ended PREEMPTED; resubmitting" in printed
    assert f"Slurm job {second} requeued by Slurm" in printed


@pytest.mark.slow
def test_reproduce_on_slurm_runs_every_training_run_as_a_job_through_dvc(
    slurm: FakeSlurm,
    project: Path,  # noqa: F811  (the fixture imported above)
) -> None:
    """`midtrain reproduce --launcher slurm` end to end through `dvc exp run`: the settings reach the
    stages through the environment, each training run (the stand-in base, every mid-training run) is
    one job that trains through the generated script, and the pipeline finishes with its metrics."""
    slurm.play(*[{"run": True}] * 12)
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", MIDTRAIN_SLURM_POLL="0.1,0.5")
    result = subprocess.run(
        [str(BIN / "midtrain"), "reproduce", "olmo-2-1124-7b", "--launcher", "slurm", "--slurm-arg", "qos=test"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (project / "metrics" / "eval.json").exists()
    records = sorted((project / "runs").glob("*/**/slurm/job.json"))
    submitted = slurm.calls("sbatch")
    assert len(records) == len(submitted) >= 2  # the base and at least one mid-training run
    assert {json.loads(r.read_text())["state"] for r in records} == {"COMPLETED"}
    assert all(job["options"]["qos"] == "test" for job in slurm.read()["jobs"].values())
    assert "qos" not in (project / "params.yaml").read_text()  # the launcher is not a parameter
    assert "submitted Slurm job" in result.stdout
