"""Stand-ins for Slurm's sbatch, squeue, sacct, scancel, scontrol and srun, for tests/test_launcher.py.

They follow the command-line contract of the options midtrain/launch.py uses (`sbatch --parsable
SCRIPT` prints `JOBID`; `squeue --noheader --states=all --jobs=ID --format=%T|%r|%N` prints one line
while Slurm holds the job and fails with "Invalid job id specified" after; `sacct --noheader
--parsable2 --allocations --jobs=ID --format=...` prints `|`-separated fields; `scancel ID`) and play
scripted job histories. `install(bin_dir, state_file)` writes a shim per command onto a PATH folder;
each runs `python fake_slurm.py COMMAND ARGS...`, and all share one JSON state file (locked).

A scenario (one per sbatch, in order) is a dict:
  states: squeue's answers, one per query, the last one repeated (scripted jobs)
  final, exit: what sacct says once the job has left the queue (default: the last state; 0:0 or 1:0)
  vanish_after: squeue stops knowing the job after this many queries
  no_accounting: sacct fails as on a cluster without job accounting
  refuse: sbatch fails with this message
  log: lines written to the job's log when it is first seen RUNNING
  checkpoint: a directory `step-NNNNNNN` is created under this path when the job ends (progress)
  run: the batch script really runs (bash, with the fake srun and scontrol on PATH); then
    kill_at_step, watch: SIGKILL the job once `watch` holds a checkpoint of at least that step, and
    requeue: true: then rerun it under the same id (Slurm's --requeue), else it ends PREEMPTED
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "srun")


def install(bin_dir: Path, state_file: Path, scenarios: list[dict[str, Any]], first_id: int) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        shim = bin_dir / command
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(HERE))} {command} "$@"\n')
        shim.chmod(0o755)
    state_file.write_text(json.dumps({"next_id": first_id, "scenarios": scenarios, "jobs": {}, "calls": []}))


@contextlib.contextmanager
def locked() -> Iterator[dict[str, Any]]:
    path = Path(os.environ["FAKE_SLURM_STATE"])
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text())
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)


def read_state() -> dict[str, Any]:
    with locked() as state:
        return state


def sbatch_options(script: str) -> dict[str, str | None]:
    """The #SBATCH options of a script, read the way sbatch's script parser reads them: words split
    at unquoted blanks, quotes (' or ") group, a backslash takes the next character literally, an
    unquoted # ends the line; parsing stops at the first line that is not a comment."""
    options: dict[str, str | None] = {}
    for line in script.splitlines()[1:]:
        if not line.startswith("#SBATCH"):
            if line.strip() and not line.lstrip().startswith("#"):
                break
            continue
        for word in _words(line[len("#SBATCH") :]):
            key, sep, value = word.partition("=")
            options[key.removeprefix("--")] = value if sep else None
    return options


def _words(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] | None = None
    quote = ""
    escape = False
    for char in text:
        if escape:
            escape = False
        elif char == "\\":
            escape = True
            current = current if current is not None else []
            continue
        elif quote:
            if char == quote:
                quote = ""
                continue
        elif char in "\"'":
            quote = char
            current = current if current is not None else []
            continue
        elif char == "#":
            break
        elif char.isspace():
            if current is not None:
                words.append("".join(current))
                current = None
            continue
        current = current if current is not None else []
        current.append(char)
    if quote:
        raise ValueError(f"unmatched {quote}")
    if current is not None:
        words.append("".join(current))
    return words


def log_path(pattern: str, job_id: str) -> str:
    return re.sub(r"%(%|j)", lambda m: "%" if m.group(1) == "%" else job_id, pattern)


def sbatch(args: list[str]) -> int:
    if len(args) != 2 or args[0] != "--parsable":
        print(f"sbatch: fake expects `sbatch --parsable SCRIPT`, got {args}", file=sys.stderr)
        return 2
    script = Path(args[1]).read_text()
    with locked() as state:
        state["calls"].append(["sbatch", *args])
        if not state["scenarios"]:
            print("sbatch: error: no more scripted jobs", file=sys.stderr)
            return 1
        scenario = state["scenarios"].pop(0)
        if "refuse" in scenario:
            print(f"sbatch: error: Batch job submission failed: {scenario['refuse']}", file=sys.stderr)
            return 1
        job_id = str(state["next_id"])
        state["next_id"] += 1
        options = sbatch_options(script)
        state["jobs"][job_id] = {
            "scenario": scenario,
            "options": options,
            "script": script,
            "cwd": os.getcwd(),
            "polls": 0,
            "state": "PENDING",
            "log": log_path(str(options["output"]), job_id),
        }
    if scenario.get("run"):
        runner = subprocess.Popen(
            [sys.executable, str(HERE), "_job", job_id],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with locked() as state:
            state["jobs"][job_id]["runner"] = runner.pid
    print(job_id)
    return 0


def _option(args: list[str], name: str) -> str:
    for arg in args:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    raise SystemExit(f"fake: missing --{name}= in {args}")


def _scripted_state(job: dict[str, Any]) -> str | None:
    """The state squeue reports for a scripted job at this query; None once it has left the queue."""
    scenario = job["scenario"]
    if job["state"] == "CANCELLED":
        return "CANCELLED"
    job["polls"] += 1
    if "vanish_after" in scenario and job["polls"] > scenario["vanish_after"]:
        return None
    states = scenario["states"]
    state = states[min(job["polls"], len(states)) - 1]
    if state == "RUNNING" and scenario.get("log") and not job.get("logged"):
        Path(job["log"]).parent.mkdir(parents=True, exist_ok=True)
        with open(job["log"], "a") as log:
            log.write("".join(line + "\n" for line in scenario["log"]))
        job["logged"] = True
    if state in ("COMPLETED", "FAILED", "PREEMPTED", "TIMEOUT") and scenario.get("checkpoint") and not job.get("ckpt"):
        folder = Path(scenario["checkpoint"])
        step = 1 + max([int(p.name[5:]) for p in folder.glob("step-*")] or [0])
        (folder / f"step-{step:07d}").mkdir(parents=True)
        job["ckpt"] = True
    job["state"] = state
    return state


def squeue(args: list[str]) -> int:
    if "--noheader" not in args or "--states=all" not in args:
        raise SystemExit(f"fake squeue: unexpected options {args}")
    job_id, form = _option(args, "jobs"), _option(args, "format")
    with locked() as state:
        state["calls"].append(["squeue", *args])
        job = state["jobs"].get(job_id)
        if job is not None and not job["scenario"].get("run"):
            current = _scripted_state(job)
        elif job is not None:
            current = job["state"]
        else:
            current = None
        if job is not None:
            job["queried"] = job.get("queried", 0) + 1
    if current is None:
        print("slurm_load_jobs error: Invalid job id specified", file=sys.stderr)
        return 1
    reason = {"PENDING": "Priority", "RUNNING": "None"}.get(current, "None")
    nodes = "node[01-02]" if current == "RUNNING" else ""
    print(form.replace("%T", current).replace("%r", reason).replace("%N", nodes))
    return 0


def sacct(args: list[str]) -> int:
    for needed in ("--noheader", "--parsable2", "--allocations"):
        if needed not in args:
            raise SystemExit(f"fake sacct: missing {needed} in {args}")
    job_id, fields = _option(args, "jobs"), _option(args, "format").split(",")
    with locked() as state:
        state["calls"].append(["sacct", *args])
        job = state["jobs"].get(job_id)
    if job is not None and job["scenario"].get("no_accounting"):
        print("sacct: error: Slurm accounting storage is disabled", file=sys.stderr)
        return 1
    if job is None:
        return 0
    scenario = job["scenario"]
    final = job["state"] if job["state"] == "CANCELLED" or scenario.get("run") else None
    final = final or scenario.get("final") or scenario["states"][-1]
    values = {
        "JobID": job_id,
        "State": final + (" by 1000" if final == "CANCELLED" else ""),
        "ExitCode": job.get("exit") or scenario.get("exit") or ("0:0" if final == "COMPLETED" else "1:0"),
        "NodeList": "node[01-02]",
    }
    print("|".join(values[name] for name in fields))
    return 0


def scancel(args: list[str]) -> int:
    with locked() as state:
        state["calls"].append(["scancel", *args])
        job = state["jobs"].get(args[0])
        if job is None or job["state"] in ("COMPLETED", "FAILED", "PREEMPTED", "CANCELLED", "TIMEOUT"):
            print(f"scancel: error: Kill job error on job id {args[0]}: Job/step already completing or completed")
            return 1
        job["state"] = "CANCELLED"
        group = job.get("group")
    if group:
        kill_tree(group)
    return 0


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, as Slurm's cgroup does (torchrun starts its ranks
    in sessions of their own, so a process group is not enough)."""
    import psutil

    for _ in range(2):  # a second pass for anything started meanwhile
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(tree, timeout=10)


def scontrol(args: list[str]) -> int:
    if args[:2] != ["show", "hostnames"]:
        raise SystemExit(f"fake scontrol: unexpected {args}")
    print("\n".join(args[2].split(",")))
    return 0


def srun(args: list[str]) -> int:
    """One copy of the command per node (SLURM_NNODES), like `srun --ntasks-per-node=1`; with
    --kill-on-bad-exit, the first failure ends the others. A copy of the command on every node."""
    command = list(args)
    while command and command[0].startswith("--"):
        command.pop(0)
    nodes = int(os.environ["SLURM_NNODES"])
    children = [
        subprocess.Popen(command, env=dict(os.environ, SLURM_NODEID=str(i), SLURM_PROCID=str(i), SLURM_LOCALID="0"))
        for i in range(nodes)
    ]
    status = 0
    while any(child.poll() is None for child in children):
        failed = [child.returncode for child in children if child.returncode]
        if failed and "--kill-on-bad-exit=1" in args:
            for child in children:
                if child.poll() is None:
                    child.terminate()  # torchrun ends its ranks on SIGTERM
        time.sleep(0.05)
    status = next((child.returncode for child in children if child.returncode), 0)
    return status


def _checkpoint_step(folder: Path) -> int:
    return max([int(p.name[5:]) for p in folder.glob("step-*") if p.name[5:].isdigit()] or [0])


def _run_once(job_id: str, job: dict[str, Any], restart: int) -> tuple[int, bool]:
    """Run the batch script as Slurm would on the first node; (exit status, killed by the scenario)."""
    scenario = job["scenario"]
    nodes = int(str(job["options"]["nodes"]))
    env = dict(
        os.environ,
        SLURM_JOB_ID=job_id,
        SLURM_NNODES=str(nodes),
        SLURM_JOB_NODELIST=",".join(["localhost"] * nodes),
        SLURM_RESTART_COUNT=str(restart),
    )
    Path(job["log"]).parent.mkdir(parents=True, exist_ok=True)
    with open(job["log"], "a") as log:
        spooled = Path(os.environ["FAKE_SLURM_STATE"]).with_name(f"spool-{job_id}.sh")  # slurmd's copy
        spooled.write_text(job["script"])
        bash = subprocess.Popen(
            ["bash", str(spooled)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=job["cwd"], env=env
        )
        with locked() as state:
            state["jobs"][job_id].update(group=bash.pid, state="RUNNING")
        limit = scenario.get("kill_at_step") if restart == 0 else scenario.get("kill_again_at_step")
        while bash.poll() is None:
            if limit and _checkpoint_step(Path(scenario["watch"])) >= limit:
                kill_tree(bash.pid)
                bash.wait()
                return -9, True
            time.sleep(0.02)
    return bash.returncode, False


def job(job_id: str) -> int:
    """The fake slurmctld + slurmstepd of one `run` job."""
    job = read_state()["jobs"][job_id]
    restart = 0
    while True:
        status, killed = _run_once(job_id, job, restart)
        current = read_state()["jobs"][job_id]["state"]
        if current == "CANCELLED":
            return 0
        if killed and job["scenario"].get("requeue") and restart == 0:
            with locked() as state:
                state["jobs"][job_id].update(state="PENDING", queried=0)
            while read_state()["jobs"][job_id].get("queried", 0) < 1:  # until midtrain has seen it queued
                time.sleep(0.02)
            restart += 1
            continue
        final = "PREEMPTED" if killed else ("COMPLETED" if status == 0 else "FAILED")
        with locked() as state:
            state["jobs"][job_id].update(state=final, exit=f"{max(status, 0)}:{9 if killed else 0}")
        return 0


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "_job":
        return job(args[0])
    if command == "srun":
        return srun(args)
    return {"sbatch": sbatch, "squeue": squeue, "sacct": sacct, "scancel": scancel, "scontrol": scontrol}[command](args)


if __name__ == "__main__":
    sys.exit(main())
