"""`midtrain microanneal`: write microanneal/params.yaml, then drive microanneal/dvc.yaml.

1. `dvc repro` up to the `units` stage: plan, data, base (each cached);
2. the `anneal@U` stages DVC reports as changed, several at once (`dvc --wait-for-lock repro
   --single-item`: DVC releases its lock while a stage's command runs), threads split between them,
   or one GPU each;
3. the same for `score@U`;
4. `dvc exp run` (or `dvc repro`) of the whole pipeline: every unit is cached by now, so it runs
   the report and records the experiment for `dvc exp show`.

Each parallel unit's output goes to logs/microanneal/<unit>.log; the terminal gets one line per
unit and a progress line with the time left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError

DVC_FILE = "microanneal/dvc.yaml"
PERCENT = re.compile(r"(\d{1,3})%|step (\d+)/(\d+)")


def dvc() -> str:
    import shutil

    return shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))


def changed_stages(project: Path) -> set[str]:
    """Stage names (`anneal@math-s0`, ...) of microanneal/dvc.yaml that `dvc status` says changed."""
    result = subprocess.run(
        [dvc(), "status", "--json", DVC_FILE], cwd=project, capture_output=True, text=True, start_new_session=True
    )
    if result.returncode != 0:
        raise MidtrainError.single(f"`dvc status` failed: {result.stderr.strip()[-400:]}", file=project / DVC_FILE)
    try:
        status = json.loads(result.stdout or "{}")
    except json.JSONDecodeError:
        raise MidtrainError.single(f"`dvc status --json` printed no JSON: {result.stdout[-200:]!r}") from None
    return {name.rpartition(":")[2] for name in status}


@dataclass
class Slot:
    env: dict[str, str]
    label: str


def slots(jobs: int | None, pending: int) -> list[Slot]:
    """Where units run at once: one GPU each when there are GPUs, else cores split evenly."""
    cores = os.cpu_count() or 1
    gpus = _gpu_count()
    if gpus:
        count = max(1, min(jobs or gpus, pending))
        return [Slot({"CUDA_VISIBLE_DEVICES": str(i % gpus)}, f"GPU {i % gpus}") for i in range(count)]
    count = max(1, min(jobs or cores, pending, cores))
    threads = max(1, cores // count)
    env = {"MIDTRAIN_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    return [Slot(dict(env), f"{threads} thread{'s' * (threads > 1)}") for _ in range(count)]


def _gpu_count() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


@dataclass
class Running:
    unit: str
    process: subprocess.Popen[bytes]
    log: Path
    slot: Slot
    started: float = field(default_factory=time.monotonic)


def _percent(log: Path) -> int | None:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = PERCENT.findall(tail)
    if not found:
        return None
    percent, step, steps = found[-1]
    return min(int(percent) if percent else 100 * int(step) // max(int(steps), 1), 100)


def run_parallel(project: Path, kind: str, units: list[str], jobs: int | None, echo: Any) -> None:
    """Run `kind@unit` for every unit, as many at once as `slots` allows; stop all on a failure or signal."""
    if not units:
        return
    free = slots(jobs, len(units))
    echo(f"{kind}: {len(units)} unit(s), {len(free)} at a time ({free[0].label} each); logs in logs/microanneal/")
    queue: list[str] = list(units)
    running: list[Running] = []
    done, durations = 0, []
    last_line = 0.0
    logs = project / "logs" / "microanneal"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        while queue or running:
            while queue and free:
                unit, slot = queue.pop(0), free.pop()
                log = logs / f"{kind}-{unit}.log"
                command = [dvc(), "--wait-for-lock", "repro", "--single-item", f"{DVC_FILE}:{kind}@{unit}"]
                with open(log, "wb") as out:
                    process = subprocess.Popen(
                        command,
                        cwd=project,
                        env={**os.environ, **slot.env},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                running.append(Running(unit, process, log, slot))
            time.sleep(0.5)
            for item in [r for r in running if r.process.poll() is not None]:
                running.remove(item)
                free.append(item.slot)
                if item.process.returncode:
                    raise MidtrainError.single(
                        f"{kind}@{item.unit} failed (exit status {item.process.returncode}); its log says why; rerun to "
                        "resume (finished units are cached, a killed one resumes from its checkpoint)",
                        file=item.log,
                    )
                done += 1
                durations.append(time.monotonic() - item.started)
                echo(f"  {kind} {item.unit}: done in {durations[-1]:.0f} s ({done}/{len(units)})")
            if running and time.monotonic() - last_line > 20:
                last_line = time.monotonic()
                echo("  " + _progress_line(kind, running, queue, durations, len(free) + len(running)))
    except BaseException:
        for item in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(item.process.pid, signal.SIGTERM)
        for item in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                item.process.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(item.process.pid, signal.SIGKILL)
        raise


def _progress_line(kind: str, running: list[Running], queue: list[str], durations: list[float], width: int) -> str:
    parts = []
    for item in running:
        pct = _percent(item.log)
        parts.append(f"{item.unit} {pct}%" if pct is not None else item.unit)
    line = f"{kind}: running {', '.join(parts)}; {len(queue)} waiting"
    if durations:
        per = sum(durations) / len(durations)
        rounds = (len(queue) + len(running)) / max(width, 1)
        line += f"; about {per * rounds / 60:.1f} min left"
    return line


def run_stage(project: Path, target: str, env: dict[str, str] | None = None) -> None:
    from midtrain.pipeline import run_child

    command = [dvc(), "repro", f"{DVC_FILE}:{target}"]
    status = run_child(command, cwd=project, env=env, quiet_log=project / "logs" / "dvc.log")
    if status:
        raise MidtrainError.single(
            f"`dvc repro {DVC_FILE}:{target}` failed (exit status {status}); DVC printed which stage. Rerun to resume"
        )


def run_experiment(project: Path, units: list[str], jobs: int | None, exp: bool, name: str | None, echo: Any) -> None:
    from midtrain.pipeline import run_child

    run_stage(project, "units")
    changed = changed_stages(project)
    anneal = [u for u in units if f"anneal@{u}" in changed]
    cached = len(units) - len(anneal)
    if cached:
        echo(f"anneal: {cached} of {len(units)} unit(s) cached")
    run_parallel(project, "anneal", anneal, jobs, echo)
    changed = changed_stages(project)
    run_parallel(project, "score", [u for u in units if f"score@{u}" in changed], jobs, echo)
    command = [dvc(), "exp", "run", DVC_FILE] if exp else [dvc(), "repro", DVC_FILE]
    if exp and name:
        command[3:3] = ["--name", name]
    status = run_child(command, cwd=project, quiet_log=project / "logs" / "dvc.log")
    if status:
        raise MidtrainError.single(f"`{' '.join(command[1:])}` failed (exit status {status}); rerun to resume")
