"""The reproduction pipeline: what each DVC stage runs, and `midtrain reproduce`.

`dvc.yaml` (repository root) is fixed and recipe-independent; `params.yaml` says which recipe, at
which scale, with which overrides. Stages:

    plan      params.yaml + recipes/ + registry/  -> plan/ (plan.json, data.json, base.json, midtrain.json, eval.json)
    data      plan/data.json                      -> data/<scale>/
    base      plan/base.json                      -> runs/<recipe>/base/      (tiny: pretrain a stand-in; full: fetch)
    midtrain  plan/midtrain.json + base           -> runs/<recipe>/mid/       (every stage, run and merge)
    evaluate  plan/eval.json + models             -> metrics/eval.json
    report    metrics + logs + plan               -> report/ (summary.md, PNG plots, CSV curves)

Each plan file is separate, so changing one mixture share changes only `midtrain.json` (and what
follows); `data` and `base` stay cached. Inside `midtrain`, each run records its specification and
the fingerprint of the model it started from, and is skipped when both are unchanged; `base` and
`mid` are `persist` outputs so an interrupted stage resumes from its checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError
from midtrain.io import weights_fingerprint, write_json
from midtrain.plan.contract import read_plan_file, write_plan
from midtrain.plan.request import PARAMS, PlanRequest, read_params, write_params  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType
    from typing import IO

    from midtrain.plan.contract import MidSpec, OrderItem, Plan

# ---------------------------------------------------------------- stages


def stage_plan(root: Path, out: Path) -> Plan:
    """Validate params.yaml and the recipe with its overrides, plan it, write plan/."""
    from midtrain.plan.api import make_plan

    request = read_params(root)
    plan = make_plan(request, root, resolve=True, where=root / PARAMS)
    if request.layout is not None and request.layout != plan.summary.layout.model_dump():
        raise MidtrainError.single(
            "params.yaml's `layout` does not match what this recipe and base plan to; rerun `midtrain reproduce` "
            "(which writes both), or set layout to the expected value",
            file=root / PARAMS,
            expected=str(plan.summary.layout.model_dump()),
            found=str(request.layout),
        )
    write_plan(plan, out)
    return plan


def stage_data(root: Path, plan_dir: Path) -> None:
    from midtrain.catalog import load_catalog
    from midtrain.data.prepare import PrepareOptions, prepare_sources, prepare_stand_in, prepare_tiny
    from midtrain.plan.contract import BuiltinData, StandInData

    spec = read_plan_file(plan_dir, "data")
    out = root / spec.out
    if isinstance(spec, BuiltinData):
        prepare_tiny(PrepareOptions(out=out, vocab_size=spec.vocab_size, seed=spec.seed, progress=True))
        return
    if isinstance(spec, StandInData):
        prepare_stand_in(
            PrepareOptions(out=out, seed=spec.seed, progress=True), spec.tokenizer.path, spec.tokenizer.revision
        )
        return
    registry = load_catalog(root).registry
    prepare_sources(
        out,
        {n: registry.sources[n] for n in spec.sources},
        spec.tokenizer.path,
        spec.tokenizer.revision,
        base=root,
        seed=spec.seed,
    )


def _run_training(spec_path: Path, root: Path) -> None:
    """One training run: a child process on this machine (torchrun when MIDTRAIN_NPROC > 1), or a
    Slurm job when `midtrain reproduce --launcher slurm` set MIDTRAIN_LAUNCH (midtrain/launch.py).
    Either way the run resumes from its last checkpoint when it was interrupted before."""
    from midtrain.launch import launch_from_env

    slurm = launch_from_env(os.environ)
    if slurm is not None:
        from midtrain.launch import job_files, run_on_slurm

        run_on_slurm(slurm, job_files(spec_path, root))
        return
    nproc = int(os.environ.get("MIDTRAIN_NPROC", "1"))
    command = [sys.executable, "-m", "midtrain", "train", str(spec_path)]
    if nproc > 1:
        command += ["--nproc-per-node", str(nproc)]
    status = run_child(command, cwd=root)
    if status:
        raise MidtrainError.single(
            f"training run failed (exit status {status}); rerun to resume from its last checkpoint", file=spec_path
        )


def stage_base(root: Path, plan_dir: Path) -> None:
    """Pretrain the stand-in base, or make the pretrained base available here and record it."""
    from midtrain.plan.contract import PretrainBase

    spec = read_plan_file(plan_dir, "base")
    if isinstance(spec, PretrainBase):
        path = root / spec.spec.out / ".spec.json"
        write_json(path, spec.spec.model_dump(mode="json"))
        _run_training(path, root)
        return
    fetch_pretrained(spec.model.path, spec.model.revision, root)
    write_json(
        root / spec.out / "base.json",
        {"model": spec.model.path, "revision": spec.model.revision, "fingerprint": spec.fingerprint},
    )


def fetch_pretrained(ref: str, revision: str | None, root: Path) -> Path:
    """The base's files through huggingface_hub (cache, or a download unless offline), or the
    directory; its config and tokenizer are loaded once to fail here rather than in training."""
    from transformers import AutoConfig, AutoTokenizer

    from midtrain.plan.bases import fetch_base, resolve_base

    resolved = resolve_base(ref, revision, root)
    local = fetch_base(
        resolved, ref if resolved.is_hub else str((root / ref) if not Path(ref).is_absolute() else ref), revision
    )
    try:
        AutoConfig.from_pretrained(str(local), trust_remote_code=False)
        AutoTokenizer.from_pretrained(str(local), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise MidtrainError.single(f"cannot load the base {ref!r} (revision {revision}): {exc}") from None
    return local


def _weights_fingerprint(model_dir: Path) -> str:
    """Identity of a model directory written by a stage: the sha256 of its weight files."""
    fingerprint = weights_fingerprint(model_dir) if model_dir.is_dir() else None
    if fingerprint is None:
        raise MidtrainError.single("model directory has no weights (did its stage finish?)", file=model_dir)
    return fingerprint


def _init_fingerprint(root: Path, path: str, base_fingerprint: str | None, base_path: str | None) -> str:
    if base_fingerprint is not None and path == base_path:
        return base_fingerprint
    return _weights_fingerprint(root / path)


def stage_midtrain(root: Path, plan_dir: Path) -> None:
    """Every mid-training run and merge of the plan, in order; unchanged ones are skipped. Runs that
    do not read each other's outputs (the data orders of a souped stage) train at the same time when
    the machine allows it (`training_slots`)."""
    from midtrain.plan.contract import PretrainedBase

    mid = read_plan_file(plan_dir, "midtrain")
    base = read_plan_file(plan_dir, "base")
    base_path = base.model.path if isinstance(base, PretrainedBase) else None
    specs_dir = root / Path(next(iter(mid.runs.values())).out).parent / ".specs"  # in this stage's output, not plan/
    for wave in run_waves(mid):
        if wave[0].kind == "merge":
            _merge(root, mid, wave[0].name)
            continue
        todo: list[tuple[str, Path, Path, dict[str, Any]]] = []
        for item in wave:
            job = _pending_run(root, plan_dir, mid, item.name, base_path)
            if job is None:
                print(f"{item.name}: unchanged, skipped", flush=True)
                continue
            spec_path = specs_dir / f"{item.name}.json"
            write_json(spec_path, mid.runs[item.name].model_dump(mode="json"))
            todo.append((item.name, spec_path, *job))
        _run_trainings([(name, path) for name, path, _, _ in todo], root)
        for _, _, stamp, key in todo:
            write_json(stamp, key)


def run_waves(mid: MidSpec) -> list[list[OrderItem]]:
    """The plan's order cut into waves that run one after the other: a merge alone, or consecutive
    runs none of which starts from (or carries the optimizer of) another run of the same wave."""
    waves: list[list[OrderItem]] = []
    for item in mid.order:
        if item.kind == "merge":
            waves.append([item])
            continue
        spec = mid.runs[item.name]
        reads = [getattr(spec.init, "path", None), spec.optimizer_from]
        current = waves[-1] if waves and waves[-1][0].kind == "run" else None
        written = [Path(mid.runs[other.name].out) for other in current or []]
        if current is not None and not any(r is not None and Path(r).is_relative_to(w) for r in reads for w in written):
            current.append(item)
        else:
            waves.append([item])
    return waves


def _pending_run(
    root: Path, plan_dir: Path, mid: MidSpec, name: str, base_path: str | None
) -> tuple[Path, dict[str, Any]] | None:
    """(done stamp, key) of a run that has to train, or None when its finished output is current."""
    from midtrain.train.config import Pretrained

    spec = mid.runs[name]
    if not isinstance(spec.init, Pretrained):  # the planner starts every mid-training run from a model
        raise MidtrainError.single(f"run {name} of the plan starts from no model", file=plan_dir / "midtrain.json")
    out = root / spec.out
    key = {
        "spec": spec.model_dump(mode="json"),
        "init": _init_fingerprint(root, spec.init.path, mid.base_fingerprint, base_path),
    }
    stamp = out / "done.json"
    if stamp.exists() and json.loads(stamp.read_text()) == key and (out / "model" / "config.json").exists():
        return None
    stamp.unlink(missing_ok=True)
    return stamp, key


def _merge(root: Path, mid: MidSpec, name: str) -> None:
    from midtrain.train.merge import merge_models

    merge = mid.merges[name]
    if merge.source_of:
        return  # an EMA/Polyak average written by its run
    out = root / merge.out
    key = {"merge": merge.model_dump(mode="json"), "inputs": [_weights_fingerprint(root / i) for i in merge.inputs]}
    stamp = out.parent / f".{out.name}.done.json"
    if stamp.exists() and json.loads(stamp.read_text()) == key and (out / "config.json").exists():
        print(f"{name}: unchanged, skipped", flush=True)
        return
    merge_models([root / i for i in merge.inputs], out, merge.weights)
    write_json(stamp, key)
    print(f"{name}: merged {len(merge.inputs)} models ({merge.method})", flush=True)


def training_slots(runs: int, environ: Mapping[str, str] | None = None, cores: int | None = None) -> tuple[int, int]:
    """(runs trained at once, torch threads each) for `runs` independent runs on this machine.

    MIDTRAIN_JOBS sets the number (1: one after the other). Otherwise, on a CPU-only machine where
    each run is one local process, they all start together, up to 1.5 per core, with the cores split
    between them: a tiny model keeps one core busier than it keeps two (two 1-thread runs trained
    1.28x faster together than one 2-thread run after the other on the 2-core build machine). With
    GPUs, torchrun or Slurm, each run gets the whole allocation, one after the other."""
    environ = os.environ if environ is None else environ
    cores = cores or os.cpu_count() or 1
    requested = environ.get("MIDTRAIN_JOBS")
    if requested:
        if not requested.strip().isdigit() or int(requested) < 1:
            raise MidtrainError.single(
                "MIDTRAIN_JOBS must be a whole number of runs to train at once",
                path="MIDTRAIN_JOBS",
                expected="an integer >= 1 (1: one run after the other)",
                found=repr(requested),
            )
        jobs = max(1, min(int(requested), runs))
    elif runs < 2 or _accelerated(environ):
        jobs = 1
    else:
        jobs = min(runs, max(1, cores + cores // 2))
    return jobs, max(1, cores // jobs)


def _accelerated(environ: Mapping[str, str]) -> bool:
    """Whether training runs use more than this process's CPU: torchrun ranks, Slurm jobs or a GPU."""
    from midtrain.launch import LAUNCH_ENV

    if int(environ.get("MIDTRAIN_NPROC", "1")) > 1 or environ.get(LAUNCH_ENV):
        return True
    if environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    import torch

    return bool(torch.cuda.is_available())


def _run_trainings(runs: list[tuple[str, Path]], root: Path) -> None:
    """Train `runs` (name, spec file): together when `training_slots` allows, else one by one."""
    if not runs:
        return
    jobs, threads = training_slots(len(runs))
    threads = int(os.environ.get("MIDTRAIN_THREADS") or threads)  # the user's thread count wins
    if jobs == 1:
        for _, spec_path in runs:
            _run_training(spec_path, root)
        return
    names = ", ".join(name for name, _ in runs)
    print(f"training {len(runs)} runs together ({names}): {jobs} at a time, {threads} thread(s) each", flush=True)
    env = {**os.environ, "MIDTRAIN_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    queue = list(runs)
    while queue:
        batch, queue = queue[:jobs], queue[jobs:]
        commands = [[sys.executable, "-m", "midtrain", "train", str(path)] for _, path in batch]
        for (name, path), status in zip(batch, run_children(commands, cwd=root, env=env)):
            if status:
                raise MidtrainError.single(
                    f"training run {name} failed (exit status {status}); rerun to resume from its last checkpoint",
                    file=path,
                )


def stage_evaluate(root: Path, plan_dir: Path, out: Path) -> dict[str, Any]:
    from midtrain.evaluate import evaluate
    from midtrain.io import remove_stale_temporaries

    config = read_plan_file(plan_dir, "eval")
    remove_stale_temporaries(out.parent)
    results = evaluate(config, root)
    write_json(out.with_name("position_curve.json"), results["position_curve"])
    write_json(out, {k: v for k, v in results.items() if k != "position_curve"})  # last: its presence means complete
    return results


# ---------------------------------------------------------------- children


# DVC's notices that a midtrain user can do nothing about (they go to logs/dvc.log instead)
DVC_NOISE = (
    "No file hash info found for",
    "To track the changes with git, run",
    "dvc config core.autostage true",
    "To enable auto staging, run",
    "Use `dvc push` to send your updates",
    "\tgit add ",
)


def _relay(stream: IO[str], log: Path) -> None:
    """Copy a child's output to stdout line by line, leaving DVC's notices in `log`."""
    import sys

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as kept:
        for line in iter(stream.readline, ""):
            if any(noise in line for noise in DVC_NOISE):
                kept.write(line)
            else:
                sys.stdout.write(line)
                sys.stdout.flush()


@contextlib.contextmanager
def _forwarding(groups: list[int]) -> Iterator[list[int]]:
    """While inside, SIGINT and SIGTERM go to every process group in `groups` (the received signals
    are collected in the yielded list); on the way out, stragglers of those groups get SIGTERM."""
    import signal

    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)  # stragglers of a group whose leader has exited


def run_child(command: list[str], cwd: Path, env: dict[str, str] | None = None, quiet_log: Path | None = None) -> int:
    """Run a child (dvc, a training run, torchrun) in its own process group and wait for it.
    SIGINT and SIGTERM received meanwhile are forwarded to the whole group, and the child is waited
    for, so no grandchild (a dvc stage, a torchrun rank) is left writing after we exit. With
    `quiet_log`, the child's output is relayed without DVC's notices (kept in that file)."""
    import threading

    pipe = subprocess.PIPE if quiet_log is not None else None
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        start_new_session=True,
        stdout=pipe,
        stderr=subprocess.STDOUT if pipe else None,
        text=True,
    )
    relay = None
    if quiet_log is not None:
        relay = threading.Thread(target=_relay, args=(process.stdout, quiet_log), daemon=True)
        relay.start()
    with _forwarding([process.pid]) as received:
        status = process.wait()
        if relay is not None:
            relay.join(timeout=10)
    if received:
        raise KeyboardInterrupt
    return status


def run_children(commands: list[list[str]], cwd: Path, env: dict[str, str] | None = None) -> list[int]:
    """Run several children at once, each in its own process group, and wait for all of them; their
    output goes to ours. When one fails, the others are stopped (SIGTERM; a training run resumes
    from its last checkpoint when rerun). Signals are forwarded as in `run_child`."""
    import signal
    import time

    processes = [subprocess.Popen(c, cwd=cwd, env=env, start_new_session=True) for c in commands]
    with _forwarding([p.pid for p in processes]) as received:
        while None in (states := [p.poll() for p in processes]):  # every child polled, every time
            if any(states) or received:
                for process in processes:
                    if process.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(process.pid, signal.SIGTERM)
                for process in processes:
                    process.wait()
                break
            time.sleep(0.2)
    if received:
        raise KeyboardInterrupt
    return [p.returncode for p in processes]


# ---------------------------------------------------------------- reproduce


def check_repository(root: Path) -> None:
    """A git repository with at least one commit and an initialised DVC project, or a clear message."""
    git = shutil.which("git")
    if git is None:
        raise MidtrainError.single("git is not installed; DVC pipelines need a git repository")
    inside = subprocess.run([git, "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    if inside.returncode != 0:
        raise MidtrainError.single(
            f"{root} is not a git repository; run `git init && git add -A && git commit -m init` first"
        )
    head = subprocess.run([git, "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        raise MidtrainError.single(
            "the git repository has no commit yet; DVC experiments need one: `git add -A && git commit -m init`"
        )
    if not (root / ".dvc").is_dir():
        raise MidtrainError.single(f"{root} is not a DVC project; run `dvc init` (and commit .dvc/) first")
    if not (root / "dvc.yaml").exists():
        raise MidtrainError.single(
            "no dvc.yaml here; copy the one from the midtrain repository (or run from its root)", file=root / "dvc.yaml"
        )


def dvc_command(root: Path, use_exp: bool, name: str | None, force: bool = False) -> list[str]:
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    if use_exp:
        command = [dvc, "exp", "run"]
        if name:
            command += ["--name", name]
    else:
        command = [dvc, "repro"]
    if force:
        command.append("--force")
    return [*command, "dvc.yaml"]  # the reproduction only, not microanneal/dvc.yaml


def summary_lines(metrics: dict[str, Any], objectives: list[str] | None = None) -> list[str]:
    from midtrain.report import summary_lines as lines

    return lines(metrics, objectives)
