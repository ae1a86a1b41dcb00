"""Where the pipeline's training runs execute: on this machine, or each one as a Slurm job.

`midtrain reproduce ... --launcher slurm --nodes N --gpus-per-node G` validates its options here
(`launch_choice`) and hands them to the DVC pipeline in the MIDTRAIN_LAUNCH environment variable.
Each training run of the `base` and `midtrain` stages then goes through `run_on_slurm`:

1. a batch script is written atomically next to the run, `OUT/slurm/train.sbatch`: an `#SBATCH`
   header (nodes, GPUs, partition, account, time, `--requeue`, the log `OUT/slurm/job-%j.out`),
   then `srun` starts one torchrun agent per node; the agents meet at the job's first node through
   the c10d rendezvous (endpoint `HEAD:PORT`, id = the job id) and start G ranks each, every rank
   running `python -m midtrain.train.entry RUN.json` exactly as a local torchrun run does;
2. it is submitted with `sbatch --parsable`, and the job id recorded in `OUT/slurm/job.json`;
3. the job is followed with `squeue` (and `sacct` once it has left the queue), polling with
   backoff, its log relayed line by line; Ctrl-C or SIGTERM cancels it with `scancel`;
4. a job that Slurm requeues (preemption, node failure) keeps its id and is followed again; a job
   that ends PREEMPTED, TIMEOUT, NODE_FAIL, BOOT_FAIL, FAILED or OUT_OF_MEMORY is resubmitted and
   the trainer resumes from OUT/checkpoints. Failures, and jobs that wrote no new checkpoint, count
   against `max_retries`; a time slice or preemption that moved the run on does not (a run longer
   than `--time` goes on in job after job, bounded by its own length). Two FAILED, OUT_OF_MEMORY or
   TIMEOUT jobs in a row that wrote no new checkpoint stop at once: that is an error in the run, not
   a transient one, and retrying would only repeat it. A job cancelled outside midtrain is not
   resubmitted.

A rerun while a job of the run is still queued or running (the shell that waited for it died)
follows that job instead of submitting a second one that would write the same directory.

The launcher is a run-time choice, not part of params.yaml: a run's result is fixed by its RunSpec
(the loss is a sum over the global batch, whatever the process count), so moving a run from this
machine to Slurm, or between clusters, partitions and node counts, must not make DVC retrain it,
and params.yaml (committed and shared) must not name one site's partition or account. What each
run was launched with is kept next to it (`OUT/slurm/train.sbatch`, `OUT/slurm/job.json`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError, short

LAUNCH_ENV = "MIDTRAIN_LAUNCH"  # JSON of a Slurm(...) below; absent: training runs on this machine
POLL_ENV = "MIDTRAIN_SLURM_POLL"  # "FIRST,MOST": seconds between Slurm queries (default 2,60)
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scancel")
RENDEZVOUS_PORTS = (20000, 10000)  # port = 20000 + job id % 10000: two jobs sharing a head node differ

# squeue's and sacct's job states (`man squeue`, JOB STATE CODES) that mean the job is over
TERMINAL = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY"}
    | {"DEADLINE", "REVOKED"}
)
RESUBMIT = frozenset({"FAILED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY"})
# of those, the ones the run itself may cause (so: stop when they repeat without progress)
RUN_FAULTS = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY"})
QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"})

# sbatch options midtrain writes itself, and the option to use instead
RESERVED = {
    "nodes": "--nodes",
    "gpus-per-node": "--gpus-per-node",
    "partition": "--partition",
    "account": "--account",
    "time": "--time",
    "ntasks": "(one task per node: torchrun starts the processes of each node)",
    "ntasks-per-node": "(one task per node: torchrun starts the processes of each node)",
    "output": "(the log is OUT/slurm/job-<id>.out, next to the run)",
    "error": "(the log is OUT/slurm/job-<id>.out, next to the run)",
    "open-mode": "(the log is appended to when Slurm requeues the job)",
    "requeue": "(always on; --max-retries bounds resubmissions)",
    "no-requeue": "(always on; --max-retries bounds resubmissions)",
    "parsable": "(midtrain submits with --parsable)",
    "wait": "(midtrain waits for the job itself)",
    "array": "(one job per training run)",
    "wrap": "(midtrain writes the batch script)",
    "chdir": "(the job runs in the project directory)",
}
_NAME = re.compile(r"[A-Za-z0-9_.,+@-]{1,256}")
_KEY = re.compile(r"[a-z][a-z0-9-]{1,63}")
_TIME = re.compile(
    r"\d{1,9}(:\d{1,2}){0,2}|\d{1,5}-\d{1,2}(:\d{1,2}){0,2}|unlimited|infinite",
    re.IGNORECASE,
)
_PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=%-]+")


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Slurm:
    """How each training run is submitted: `midtrain reproduce --launcher slurm ...`."""

    nodes: int = 1
    nproc_per_node: int = 1  # torchrun processes per node: one per GPU
    gpus_per_node: int | None = None  # None: request no GPUs (a CPU partition, or the site's default)
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    extra: tuple[tuple[str, str | None], ...] = ()  # further sbatch options: (key, value or None for a flag)
    max_retries: int = 3

    def describe(self) -> str:
        def count(n: int, one: str, many: str) -> str:
            return f"{n} {one if n == 1 else many}"

        gpus, processes = self.gpus_per_node, self.nproc_per_node
        per_node = count(gpus, "GPU", "GPUs") if gpus else count(processes, "process", "processes")
        return f"{count(self.nodes, 'node', 'nodes')} × {per_node}"

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def _bad(option: str, message: str, expected: str, found: object) -> MidtrainError:
    return MidtrainError.single(message, path=option, expected=expected, found=short(found, 200))


def _name(option: str, value: str | None, what: str) -> str | None:
    if value is not None and not _NAME.fullmatch(value):
        raise _bad(option, f"not a Slurm {what} name", "letters, digits and _ . , + @ - (up to 256)", value)
    return value


def parse_slurm_args(items: list[str]) -> tuple[tuple[str, str | None], ...]:
    """`--slurm-arg KEY=VALUE` (or a bare KEY for a flag such as `exclusive`), validated."""
    parsed: list[tuple[str, str | None]] = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not _KEY.fullmatch(key):
            raise _bad(
                "--slurm-arg",
                "not an sbatch option: give its long name without dashes, and a value after `=` if it takes one",
                "KEY=VALUE or KEY, e.g. qos=high, constraint=h100, exclusive",
                item,
            )
        if key in RESERVED:
            raise _bad(
                "--slurm-arg", f"midtrain sets `{key}` itself; use {RESERVED[key]}", "another sbatch option", item
            )
        if any(c in value for c in "\n\r\x00"):
            raise _bad("--slurm-arg", "the value has a line break or NUL byte", "one line", item)
        parsed.append((key, value if sep else None))
    return tuple(parsed)


def slurm_settings(
    nodes: int = 1,
    gpus_per_node: int | None = None,
    nproc_per_node: int | None = None,
    partition: str | None = None,
    account: str | None = None,
    time: str | None = None,
    slurm_args: list[str] | None = None,
    max_retries: int = 3,
) -> Slurm:
    """Checked settings of the Slurm launcher; every problem names the option."""
    if not 1 <= nodes <= 4096:
        raise _bad("--nodes", "a job needs at least one node", "1 to 4096", nodes)
    if gpus_per_node is not None and not 0 <= gpus_per_node <= 64:
        raise _bad("--gpus-per-node", "out of range", "0 to 64", gpus_per_node)
    if nproc_per_node is not None and not 1 <= nproc_per_node <= 256:
        raise _bad("--nproc-per-node", "out of range", "1 to 256", nproc_per_node)
    if gpus_per_node and nproc_per_node is not None and nproc_per_node != gpus_per_node:
        raise _bad(
            "--nproc-per-node",
            "with --gpus-per-node, each node runs one process per GPU; leave --nproc-per-node out",
            f"{gpus_per_node} (= --gpus-per-node)",
            nproc_per_node,
        )
    if time is not None and not _TIME.fullmatch(time):
        raise _bad(
            "--time",
            "not a Slurm time limit",
            "MINUTES, HOURS:MINUTES:SECONDS, DAYS-HOURS, DAYS-HOURS:MINUTES[:SECONDS] or UNLIMITED",
            time,
        )
    if not 0 <= max_retries <= 100:
        raise _bad("--max-retries", "out of range", "0 to 100", max_retries)
    return Slurm(
        nodes=nodes,
        nproc_per_node=nproc_per_node or gpus_per_node or 1,
        gpus_per_node=gpus_per_node,
        partition=_name("--partition", partition, "partition"),
        account=_name("--account", account, "account"),
        time=time,
        extra=parse_slurm_args(slurm_args or []),
        max_retries=max_retries,
    )


def launch_choice(
    launcher: str,
    nodes: int = 1,
    gpus_per_node: int | None = None,
    nproc_per_node: int | None = None,
    partition: str | None = None,
    account: str | None = None,
    time: str | None = None,
    slurm_args: list[str] | None = None,
    max_retries: int = 3,
) -> tuple[int, Slurm | None]:
    """`midtrain reproduce`'s launcher options: (processes per run on this machine, None) for
    `local`, (that, Slurm settings) for `slurm`. Slurm's commands must be on PATH."""
    if launcher == "slurm":
        settings = slurm_settings(
            nodes, gpus_per_node, nproc_per_node, partition, account, time, slurm_args, max_retries
        )
        require_slurm()
        return settings.nproc_per_node, settings
    if launcher != "local":
        raise _bad("--launcher", "unknown launcher", "local or slurm", launcher)
    given = {
        "--gpus-per-node": gpus_per_node,
        "--partition": partition,
        "--account": account,
        "--time": time,
        "--slurm-arg": slurm_args or None,
    }
    for option, value in given.items():
        if value is not None:
            raise _bad(option, "only applies with --launcher slurm", "--launcher slurm", f"{option} {value}")
    if nodes != 1:
        raise _bad(
            "--nodes",
            "several nodes need --launcher slurm; without Slurm, start `midtrain train RUN.json --nnodes ...` on "
            "each node (README: Scaling out › Multi-node training)",
            "1, or --launcher slurm",
            nodes,
        )
    if nproc_per_node is not None and not 1 <= nproc_per_node <= 256:
        raise _bad("--nproc-per-node", "out of range", "1 to 256", nproc_per_node)
    return nproc_per_node or 1, None


def launch_from_env(environ: Mapping[str, str]) -> Slurm | None:
    """The Slurm settings `midtrain reproduce` passed down to the stages, re-validated; None: local."""
    text = environ.get(LAUNCH_ENV)
    if not text:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        extra = data.pop("extra", [])
        slurm_args = [key if value is None else f"{key}={value}" for key, value in extra]
        return slurm_settings(**data, slurm_args=slurm_args)
    except (ValueError, TypeError, MidtrainError) as exc:
        what = exc.render().replace("\n", " ") if isinstance(exc, MidtrainError) else str(exc)
        raise MidtrainError.single(
            f"the environment variable {LAUNCH_ENV} is not what `midtrain reproduce --launcher slurm` writes "
            f"({short(what, 200)}); unset it, or rerun `midtrain reproduce`",
            found=short(text, 200),
        ) from None


def require_slurm() -> None:
    missing = [name for name in SLURM_COMMANDS if shutil.which(name) is None]
    if missing:
        raise MidtrainError.single(
            f"--launcher slurm needs Slurm's commands on PATH, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not there. Run `midtrain reproduce` on a login node of your "
            "cluster (where `sbatch --version` works; on some clusters after `module load slurm`), or train on this "
            "machine with --launcher local (the default)",
            path="--launcher",
            expected=", ".join(SLURM_COMMANDS),
            found="missing: " + ", ".join(missing),
        )


# ---------------------------------------------------------------- the batch script


@dataclass(frozen=True)
class JobFiles:
    """A training run as a job: what it runs, where, and where its script, record and logs go."""

    root: Path  # the project: the job's working directory
    spec: Path  # the run's specification (RunSpec JSON)
    out: Path  # the run's directory
    name: str  # the run's name
    python: str = field(default_factory=lambda: sys.executable)  # on the nodes too: a shared filesystem

    @property
    def folder(self) -> Path:
        return self.out / "slurm"

    @property
    def script(self) -> Path:
        return self.folder / "train.sbatch"

    @property
    def record(self) -> Path:
        return self.folder / "job.json"

    def log(self, job_id: str) -> Path:
        return self.folder / f"job-{job_id}.out"


def job_files(spec_path: Path, root: Path) -> JobFiles:
    """The job of the run that `spec_path` specifies (its `out` is relative to the project)."""
    spec_path = (root / spec_path).absolute()
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
        out, name = data["out"], data["name"]
        if not isinstance(out, str) or not isinstance(name, str):
            raise TypeError("out and name must be strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MidtrainError.single(
            f"cannot read the run specification: {short(str(exc), 200)}", file=spec_path
        ) from None
    return JobFiles(root=root.absolute(), spec=spec_path, out=(root / out).absolute(), name=name)


def sbatch_quote(value: str) -> str:
    """A value as sbatch reads it from an `#SBATCH` line: plain, or in double quotes with `\\` and `"`
    escaped by a backslash (sbatch's script parser groups quoted text, takes the character after a
    backslash literally, and ends the line at an unquoted `#`)."""
    if any(c in value for c in "\n\r\x00"):
        raise MidtrainError.single("a value for an #SBATCH line has a line break or NUL byte", found=short(value))
    if _PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _log_pattern(files: JobFiles) -> str:
    """`--output`: the log path with `%` doubled (Slurm expands `%j` and friends there) and `%j`."""
    folder = str(files.folder)
    if "\\" in folder:  # a backslash turns off Slurm's %j expansion in the whole name
        raise MidtrainError.single(
            "Slurm cannot name a log in a path that contains a backslash; move the project", file=files.folder
        )
    return folder.replace("%", "%%") + "/job-%j.out"


def job_name(name: str) -> str:
    return "midtrain-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:100] or "run")


def render_script(settings: Slurm, files: JobFiles) -> str:
    """The batch script of one training run (its text is tested exactly)."""
    header: list[tuple[str, str | None]] = [
        ("job-name", job_name(files.name)),
        ("nodes", str(settings.nodes)),
        ("ntasks-per-node", "1"),
    ]
    if settings.gpus_per_node:
        header.append(("gpus-per-node", str(settings.gpus_per_node)))
    for key in ("partition", "account", "time"):
        value = getattr(settings, key)
        if value is not None:
            header.append((key, value))
    header += [("output", _log_pattern(files)), ("open-mode", "append"), ("requeue", None), *settings.extra]
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# midtrain: training run {files.name}, {settings.describe()}. Written by `midtrain reproduce --launcher",
        "# slurm`, which submits it with `sbatch --parsable` and follows the job; submitting it again by hand",
        "# resumes the run from its last checkpoint in the run directory.",
        *(f"#SBATCH --{key}" + ("" if value is None else f"={sbatch_quote(value)}") for key, value in header),
        "set -euo pipefail",
        f"cd {q(str(files.root))}",
        "export PYTHONUNBUFFERED=1",
        "# srun passes the job's CPUs on to its step only when told to (Slurm 22.05 and later)",
        'if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"; fi',
        "# one torchrun agent per node; they meet at the first node (c10d rendezvous, id = the job id)",
        'nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        "head_node=${nodes%%$'\\n'*}",
        f"port=$(( {RENDEZVOUS_PORTS[0]} + SLURM_JOB_ID % {RENDEZVOUS_PORTS[1]} ))",
        'echo "midtrain: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST,'
        ' rendezvous $head_node:$port"',
        'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \\',
        f"  {q(files.python)} -m torch.distributed.run \\",
        f'  --nnodes="$SLURM_NNODES" --nproc-per-node={settings.nproc_per_node} \\',
        '  --rdzv-backend=c10d --rdzv-endpoint="$head_node:$port" --rdzv-id="$SLURM_JOB_ID" \\',
        f"  -m midtrain.train.entry {q(str(files.spec))}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- Slurm's commands


@dataclass(frozen=True)
class JobState:
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, ...
    reason: str = ""  # why it waits (squeue's %r)
    nodes: str = ""
    exit_code: str = ""  # sacct's ExitCode, "status:signal"


def slurm(args: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one of Slurm's commands in its own process group, which is killed on a timeout or Ctrl-C."""
    executable = shutil.which(args[0])
    if executable is None:
        require_slurm()
        raise MidtrainError.single(f"{args[0]} is not on PATH")
    process = subprocess.Popen(
        [executable, *args[1:]],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            return subprocess.CompletedProcess(args, 124, "", f"{args[0]} did not answer within {timeout:.0f} s")
        raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def submit(files: JobFiles) -> str:
    """`sbatch --parsable SCRIPT`; the job id."""
    result = slurm(["sbatch", "--parsable", str(files.script)], cwd=files.root)
    job_id = result.stdout.strip().split(";")[0]
    if result.returncode != 0 or not job_id.isdigit():
        raise MidtrainError.single(
            f"sbatch refused the job of training run {files.name} (exit status {result.returncode}): "
            f"{_last_lines(result.stderr or result.stdout, 5) or 'no message'}",
            file=files.script,
        )
    return job_id


def query(job_id: str) -> JobState | str:
    """The job's state: squeue while Slurm holds the job, else sacct; when neither knows it, what
    they said."""
    listed = slurm(["squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T|%r|%N"])
    line = listed.stdout.strip().splitlines()[0] if listed.returncode == 0 and listed.stdout.strip() else ""
    if line:
        state, reason, nodes = ([*line.split("|"), "", ""])[:3]
        return JobState(state.strip(), reason.strip(), nodes.strip())
    found = accounting(job_id)
    if isinstance(found, JobState):
        return found
    return f"squeue: {_last_lines(listed.stderr, 1) or 'no such job'}; sacct: {found or 'no such job'}"


def accounting(job_id: str) -> JobState | str:
    """sacct's record of the job: state (without "by UID"), exit code, nodes; or what sacct said."""
    done = slurm(
        [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            f"--jobs={job_id}",
            "--format=JobID,State,ExitCode,NodeList",
        ]
    )
    if done.returncode != 0:
        return _last_lines(done.stderr or done.stdout, 1) or f"exit status {done.returncode}"
    for line in done.stdout.splitlines():
        fields = [*line.split("|"), "", "", ""]
        if fields[0].strip() == job_id and fields[1].strip():
            return JobState(fields[1].split()[0], "", fields[3].strip(), fields[2].strip())
    return ""


def cancel(job_id: str) -> None:
    slurm(["scancel", job_id], timeout=60)


# ---------------------------------------------------------------- following a job


@dataclass(frozen=True)
class Polling:
    """Seconds between Slurm queries: `first` after a change, growing by `factor` up to `most`; the
    log is read every `tail`. A job neither squeue nor sacct knows for `give_up` queries is an error."""

    first: float = 2.0
    most: float = 60.0
    factor: float = 1.5
    tail: float = 1.0
    give_up: int = 20

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Polling:
        text = environ.get(POLL_ENV)
        if not text:
            return cls()
        try:
            first, most = (float(part) for part in text.split(","))
            if not (0 < first <= most <= 3600):
                raise ValueError
        except ValueError:
            raise MidtrainError.single(
                f"{POLL_ENV} must be FIRST,MOST seconds between Slurm queries", expected="e.g. 2,60", found=text
            ) from None
        return cls(first=first, most=most, tail=min(1.0, first))


class LogTail:
    """Relays the lines a job appends to its log to our stdout."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def pump(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size < self.offset:  # replaced or truncated: from the start
                    self.offset, self.partial = 0, b""
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if final and self.partial:
            lines.append(self.partial)
            self.partial = b""
        if lines:
            sys.stdout.write("".join(line.decode("utf-8", "replace") + "\n" for line in lines))
            sys.stdout.flush()


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (from `midtrain reproduce`, a scheduler or `kill`) interrupts like Ctrl-C meanwhile."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def cancel_on_interrupt(job_id: str, name: str) -> Iterator[None]:
    """An interrupt while a job is followed cancels the job (`scancel`), then goes on."""
    try:
        yield
    except KeyboardInterrupt:
        with contextlib.suppress(MidtrainError, OSError):
            cancel(job_id)
        print(
            f"{name}: cancelled Slurm job {job_id}; rerun to submit it again (it resumes from its last checkpoint)",
            file=sys.stderr,
            flush=True,
        )
        raise


def _announce(name: str, job_id: str, state: JobState, before: JobState | None) -> None:
    if state.state == "RUNNING":
        text = f"running on {state.nodes}" if state.nodes else "running"
    elif state.state in QUEUED and before is not None and before.state in ("RUNNING", "COMPLETING"):
        text = "requeued by Slurm (preempted, or a node failed); it resumes from its last checkpoint"
    else:
        text = state.state.lower() + (f" ({state.reason})" if state.reason not in ("", "None") else "")
    print(f"{name}: Slurm job {job_id} {text}", flush=True)


def follow(job_id: str, files: JobFiles, polling: Polling) -> JobState:
    """Wait for the job to end, relaying its log and its changes of state; its final state."""
    tail = LogTail(files.log(job_id))
    before: JobState | None = None
    delay, unknown, due = polling.first, 0, 0.0
    with cancel_on_interrupt(job_id, files.name):
        while True:
            if time.monotonic() >= due:
                answer = query(job_id)
                state = answer if isinstance(answer, JobState) else None
                unknown = 0 if state is not None else unknown + 1
                if unknown >= polling.give_up:
                    raise MidtrainError.single(
                        f"Slurm has no job {job_id} (training run {files.name}) any more ({answer}). Is job "
                        "accounting (sacct) enabled on this cluster? Its log may say how it ended",
                        file=files.log(job_id),
                    )
                ended = state is not None and state.state in TERMINAL
                if ended:
                    tail.pump(final=True)  # the log's last lines before the verdict
                if state is not None and (
                    before is None or (state.state, state.reason) != (before.state, before.reason)
                ):
                    _announce(files.name, job_id, state, before)
                    before, delay = state, polling.first
                else:
                    delay = min(delay * polling.factor, polling.most)
                if ended and state is not None:
                    return state
                due = time.monotonic() + delay
            tail.pump()
            time.sleep(max(0.0, min(polling.tail, due - time.monotonic())))


# ---------------------------------------------------------------- one training run


def newest_checkpoint(out: Path) -> int | None:
    """The step of the run's newest checkpoint directory (progress between two attempts)."""
    from midtrain.train.checkpoint import list_checkpoints, step_of

    found = list_checkpoints(out / "checkpoints")
    return step_of(found[-1]) if found else None


def _last_lines(text: str, count: int) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def _log_lines(path: Path, count: int = 12) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 16384))
            return _last_lines(handle.read().decode("utf-8", "replace"), count)
    except OSError:
        return ""


def _record(files: JobFiles, settings: Slurm, script: str, jobs: list[str], state: str) -> None:
    from midtrain.io import write_json

    write_json(
        files.record,
        {
            "run": files.name,
            "job_id": jobs[-1],
            "state": state,
            "jobs": jobs,
            "script_sha256": hashlib.sha256(script.encode()).hexdigest(),
            "settings": asdict(settings),
        },
    )


def _live_job(files: JobFiles, script: str) -> tuple[str | None, list[str]]:
    """A job of this run that is still queued or running (a rerun follows it instead of submitting
    a second one that would write the same directory), and the run's earlier job ids."""
    try:
        record = json.loads(files.record.read_text(encoding="utf-8"))
        job_id, jobs = str(record["job_id"]), [str(j) for j in record["jobs"]]
        same = record["script_sha256"] == hashlib.sha256(script.encode()).hexdigest()
    except (OSError, ValueError, KeyError, TypeError):
        return None, []
    state = query(job_id) if job_id.isdigit() else None
    if not isinstance(state, JobState) or state.state in TERMINAL:
        return None, jobs
    if not same:
        raise MidtrainError.single(
            f"Slurm job {job_id} of training run {files.name} is still {state.state.lower()}, submitted with other "
            f"settings; wait for it to end or cancel it (`scancel {job_id}`), then rerun",
            file=files.record,
        )
    print(f"{files.name}: Slurm job {job_id} of this run is still {state.state.lower()}; following it", flush=True)
    return job_id, jobs


def run_on_slurm(settings: Slurm, files: JobFiles, polling: Polling | None = None) -> None:
    """One training run as a Slurm job, resubmitted after a preemption or failure (bounded); returns
    when a job of it has COMPLETED, raises a MidtrainError naming the job and its log otherwise."""
    require_slurm()
    polling = polling or Polling.from_env(os.environ)
    script = render_script(settings, files)
    with sigterm_as_interrupt():
        _run_jobs(settings, files, polling, script)


def _run_jobs(settings: Slurm, files: JobFiles, polling: Polling, script: str) -> None:
    job_id, jobs = _live_job(files, script)
    retries = stalled = 0
    while True:
        if job_id is None:
            from midtrain.io import write_text

            write_text(files.script, script)
            job_id = submit(files)
            jobs.append(job_id)
            _record(files, settings, script, jobs, "SUBMITTED")
            print(
                f"{files.name}: submitted Slurm job {job_id} ({settings.describe()}); "
                f"script {files.script}, log {files.log(job_id)}",
                flush=True,
            )
        start = newest_checkpoint(files.out)
        state = follow(job_id, files, polling)
        _record(files, settings, script, jobs, state.state)
        if state.state == "COMPLETED":
            return
        now = newest_checkpoint(files.out)
        progressed = now is not None and (start is None or now > start)
        # a time slice or a preemption that moved the run on is how long runs go; it costs no retry
        free = progressed and state.state in ("TIMEOUT", "PREEMPTED")
        retries += 0 if free else 1
        stalled = 0 if progressed or state.state not in RUN_FAULTS else stalled + 1
        _check_retry(settings, files, job_id, state, retries, stalled)
        with contextlib.suppress(MidtrainError, OSError):
            cancel(job_id)  # should Slurm be about to requeue it after all, the resubmitted job stays the only one
        count = "it moved the run on: no retry counted" if free else f"retry {retries} of {settings.max_retries}"
        print(
            f"{files.name}: Slurm job {job_id} ended {state.state}; resubmitting ({count}); it resumes from "
            + (f"checkpoint step {now}" if now is not None else "the start (no checkpoint yet)"),
            flush=True,
        )
        job_id = None


def _check_retry(settings: Slurm, files: JobFiles, job_id: str, state: JobState, retries: int, stalled: int) -> None:
    """Raise when the run must not be resubmitted: cancelled, not retryable, out of retries, or failing
    again without having written a checkpoint."""
    if state.state not in RESUBMIT:
        why = (
            "was cancelled outside midtrain"
            if state.state == "CANCELLED"
            else f"ended {state.state}, which resubmitting would not change"
        )
    elif stalled >= 2:
        why = (
            f"ended {state.state} twice in a row without writing a new checkpoint: an error in the run, "
            "not a transient failure"
        )
    elif retries > settings.max_retries:
        why = f"ended {state.state}, and --max-retries {settings.max_retries} allows no more resubmissions"
    else:
        return
    if not state.exit_code:
        detail = accounting(job_id)
        exit_code = detail.exit_code if isinstance(detail, JobState) else ""
        state = JobState(state.state, state.reason, state.nodes, exit_code)
    log = files.log(job_id)
    tail = _log_lines(log)
    raise MidtrainError.single(
        f"training run {files.name}: Slurm job {job_id} {why}"
        + (f" (exit code {state.exit_code})" if state.exit_code else "")
        + ". Fix the cause and rerun: the run resumes from its last checkpoint."
        + ("\n  last lines of the log:\n    " + tail.replace("\n", "\n    ") if tail else ""),
        file=log,
    )
