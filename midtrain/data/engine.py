"""`data prepare --executor local|slurm|ray`: reading, decontamination, tokenization and packing as a
datatrove pipeline, then one merge task that writes exactly what the single-process path writes.

Two datatrove stages, each an executor of the chosen kind (`LocalPipelineExecutor`,
`SlurmPipelineExecutor`, `RayPipelineExecutor`) over the same steps:

1. **tokenize**, T tasks: `ReadStreams` reads task r's part of every pending stream (midtrain/data/
   parts.py cuts each stream into T contiguous parts), any extra datatrove steps run,
   `Decontaminate` marks documents with today's n-gram rule (midtrain/data/decontam.py, index built
   once by the driver), and `PackParts` tokenizes with the run's tokenizer (the `tokenizers` fast
   path) and writes task r's packed part of each stream, plus a record of its counts.
2. **merge**, 1 task, after every tokenize task completed: `MergeParts` concatenates the parts of
   each stream in task order (never in order of completion) into `shards/<stream>.bin|.idx`, sums
   the decontamination counts into `decontam.json`, and writes the manifest entries.

Because the parts are contiguous and concatenated in task order, the shards, the manifest and the
report are byte for byte those of the single-process path, whatever the number of tasks or workers.

Everything lives in `<out>/.engine/<plan hash>/`: `plan.json` (streams, parts, settings),
`eval-index.npz`, `parts/<task>/`, and datatrove's logging folders `tokenize/` and `merge/` (logs,
stats, and `completions/<task>`). A task is complete when datatrove wrote its completion marker,
after all its files: a rerun with the same inputs finds the same plan hash, skips completed tasks
and redoes the others from scratch (a task's parts are named by task and stream, written
atomically, so a redone or doubly-run task replaces its own files and never adds to them). The
merge is idempotent: a stream already in the manifest with the same inputs is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from midtrain.data.decontam import load_index, save_index
from midtrain.errors import MidtrainError, Problem
from midtrain.io import atomic_writer, remove_stale_temporaries, write_json

if TYPE_CHECKING:
    from midtrain.data.decontam import EvalIndex
    from midtrain.data.tokenizer import FastTokenizer

ENGINE_DIR = ".engine"
EXECUTORS = ("local", "slurm", "ray")
PLAN_VERSION = 1


@dataclass
class EngineOptions:
    """How `data prepare` runs on datatrove. `tasks` (default: `workers`) is how many parts each
    stream is cut into; `workers` how many tasks run at once. The output does not depend on either."""

    executor: str = "local"
    workers: int = 1
    tasks: int | None = None
    cpus_per_task: int = 1  # tokenizer threads per task (and Slurm's --cpus-per-task, Ray's num_cpus)
    mem_per_cpu_gb: int = 2
    # Slurm
    partition: str | None = None
    time: str = "24:00:00"
    qos: str | None = None
    sbatch_args: dict[str, str] = field(default_factory=dict)
    env_command: str | None = None  # run before each Slurm task (default: activate this Python environment)
    # Ray
    ray_address: str | None = None
    # datatrove steps run on every document after reading, before decontamination (Python API)
    extra_steps: list[Any] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # Slurm job ids, filled in by run_engine

    @property
    def task_count(self) -> int:
        return self.tasks or self.workers

    def check(self) -> None:
        if self.executor not in EXECUTORS:
            raise MidtrainError.single("unknown executor", expected=", ".join(EXECUTORS), found=self.executor)
        for name in ("workers", "cpus_per_task", "mem_per_cpu_gb"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise MidtrainError.single(f"--{name.replace('_', '-')} must be at least 1", found=repr(value))
        if self.tasks is not None and (not isinstance(self.tasks, int) or self.tasks < 1):
            raise MidtrainError.single("--tasks must be at least 1", found=repr(self.tasks))
        if self.executor == "slurm" and not self.partition:
            raise MidtrainError.single("--executor slurm needs --partition (the Slurm partition to run on)")


class EngineTaskError(RuntimeError):
    """A task failed; what went wrong is in its error record (plain, so any executor can pickle it)."""


# ---- the plan -------------------------------------------------------------------------------------


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_step(step: Any) -> str:
    """A stable description of an extra step (class and settings): part of the plan hash."""
    settings = {k: v for k, v in vars(step).items() if k != "stats"}
    return f"{type(step).__module__}.{type(step).__qualname__} {json.dumps(settings, sort_keys=True, default=str)}"


def write_plan(
    out: Path,
    jobs: list[dict[str, Any]],
    settings: dict[str, Any],
    engine: EngineOptions,
    build_index: Callable[[], EvalIndex] | None,
) -> Path:
    """Cut every pending stream into parts and write the plan (once per distinct plan); returns its path."""
    from midtrain.data.parts import plan_parts

    tasks = engine.task_count
    planned = [{**job, "parts": plan_parts(job["origin"], tasks)} for job in jobs]
    plan = {
        "version": PLAN_VERSION,
        **settings,
        "tasks": tasks,
        "threads": engine.cpus_per_task,
        "steps": [describe_step(step) for step in engine.extra_steps],
        "jobs": planned,
    }
    decontaminating = any(job["decontaminate"] for job in jobs)
    plan["index"] = "eval-index.npz" if decontaminating else None
    work = Path(out).resolve() / ENGINE_DIR / _digest(plan)
    path = work / "plan.json"
    if (work / "merged.json").exists():  # merged before, yet pending again: its shards were lost; start over
        shutil.rmtree(work)
    if not path.exists():
        if decontaminating:
            assert build_index is not None
            index = build_index()  # first: its own errors (a missing evaluation file) are its own
            with atomic_writer(work / "eval-index.npz", "wb") as handle:
                save_index(index, handle)
        write_json(path, plan)
    return path


@lru_cache(maxsize=8)
def load_plan(path: str) -> dict[str, Any]:
    """A plan is never changed once written (its folder is named by its hash), so it is read once."""
    return json.loads(Path(path).read_text())


@lru_cache(maxsize=2)
def _index(path: str) -> EvalIndex:
    return load_index(Path(path))


@lru_cache(maxsize=2)
def _tokenizer(directory: str) -> FastTokenizer:
    from midtrain.data.tokenizer import load_tokenizer

    return load_tokenizer(Path(directory))


def part_dir(plan_path: str | Path, rank: int) -> Path:
    return Path(plan_path).parent / "parts" / f"{rank:05d}"


# ---- failures: recorded where the driver can read them, raised as plain errors -----------------------


@contextlib.contextmanager
def recorded(plan_path: str, stage: str, rank: int) -> Iterator[None]:
    """Write what went wrong in a task to `errors/<stage>-<rank>.json` and raise a plain error:
    a MidtrainError (a dataclass) does not survive the pickling between processes."""
    try:
        yield
    except EngineTaskError:
        raise
    except Exception as exc:
        problems = exc.problems if isinstance(exc, MidtrainError) else [Problem(f"{type(exc).__name__}: {exc}")]
        record = {"stage": stage, "task": rank, "problems": [asdict(p) for p in problems]}
        write_json(
            Path(plan_path).parent / "errors" / f"{stage}-{rank:05d}.json",
            record | {"traceback": traceback.format_exc()},
        )
        raise EngineTaskError(f"{stage} task {rank}: " + "; ".join(p.message for p in problems)) from None


def failure(work: Path, stage: str, logs: Path) -> MidtrainError:
    """The error of the first failed task of `stage`, as the single-process path would have raised it."""
    problems: list[Problem] = []
    for path in sorted((work / "errors").glob(f"{stage}-*.json")):
        record = json.loads(path.read_text())
        for item in record["problems"]:
            item["file"] = Path(item["file"]) if item.get("file") else None
            problems.append(Problem(**item))
        break
    if not problems:
        problems.append(Problem(f"a data engine {stage} task did not finish"))
    problems.append(
        Problem(
            f"(data engine: {stage} task failed; its log is in {logs / 'logs'}; run the same command again "
            "to redo the unfinished tasks, finished ones are kept)"
        )
    )
    return MidtrainError(problems)


# ---- the pipeline steps ---------------------------------------------------------------------------


class _PlanStep(PipelineStep):
    """A step of the engine's pipeline: it reads the prepare plan at `plan_path` (written by the driver)."""

    def __init__(self, plan_path: str):
        super().__init__()
        self.plan_path = plan_path


class ReadStreams(_PlanStep):
    """Task r's part of every pending stream, in plan order, as datatrove Documents."""

    type = "📖 - READER"
    name = "midtrain streams"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from midtrain.data.parts import read_part

        with recorded(self.plan_path, "tokenize", rank):
            plan = load_plan(self.plan_path)
            if world_size != plan["tasks"]:
                raise MidtrainError.single(
                    "the executor's task count is not the plan's", expected=str(plan["tasks"]), found=str(world_size)
                )
            folder = part_dir(self.plan_path, rank)
            for number, job in enumerate(plan["jobs"]):
                count = 0
                for doc_id, text in read_part(job["origin"], job["parts"][rank]):
                    self.stat_update("documents")
                    yield Document(
                        text=text,
                        id=str(count) if doc_id is None else doc_id,
                        metadata={"job": number, "number": count},
                    )
                    count += 1
                write_json(folder / f"{number:04d}.read.json", {"rows": count})


class Decontaminate(_PlanStep):
    """Marks the documents of decontaminated streams that hold at least `threshold` of some
    evaluation item's n-grams (the single-process rule); `PackParts` drops or keeps them."""

    type = "🦠 - DECONT"
    name = "midtrain n-gram decontamination"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from midtrain.data.decontam import judge

        with recorded(self.plan_path, "tokenize", rank):
            plan = load_plan(self.plan_path)
            index = _index(str(Path(self.plan_path).parent / plan["index"])) if plan["index"] else None
            threshold = plan["decontam"]["threshold"]
            for doc in data or ():
                if index is not None and plan["jobs"][doc.metadata["job"]]["decontaminate"]:
                    self.stat_update("checked")
                    with self.track_time():
                        contaminated, overlap, eval_id = judge(index, doc.text, threshold)
                    if contaminated:
                        self.stat_update("contaminated")
                        doc.metadata.update(contaminated=True, overlap=overlap, eval_item=eval_id)
                yield doc


class PackParts(_PlanStep):
    """Tokenizes task r's documents and writes `parts/<r>/<stream number>.bin|.idx` (the packing
    format, midtrain/data/packing.py) and, last, a `.json` record of the part's counts."""

    type = "🔢 - TOKENIZER"
    name = "midtrain pack parts"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with recorded(self.plan_path, "tokenize", rank), _threads(load_plan(self.plan_path)["threads"]):
            plan = load_plan(self.plan_path)
            folder = part_dir(self.plan_path, rank)
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.tmp"):  # only this task writes here: any temporary is a killed attempt's
                stale.unlink(missing_ok=True)
            tokenizer = _tokenizer(plan["tokenizer"]["dir"])
            written = set()
            for number, docs in itertools.groupby(data or (), key=lambda doc: doc.metadata["job"]):
                self._write(plan, folder, number, docs, tokenizer)
                written.add(number)
            for number in range(len(plan["jobs"])):
                if number not in written:  # no document of this stream in this part: an empty part
                    self._write(plan, folder, number, iter(()), tokenizer)
        yield from ()

    def _write(self, plan: dict[str, Any], folder: Path, number: int, docs: Iterator[Document], tokenizer: Any) -> None:
        from midtrain.data.decontam import MAX_EXAMPLES
        from midtrain.data.packing import write_packed

        drop = plan["decontam"]["action"] == "drop"
        record: dict[str, Any] = {"seen": 0, "contaminated": 0, "examples": []}

        def kept() -> Iterator[str]:
            for doc in docs:
                record["seen"] += 1
                if doc.metadata.get("contaminated"):
                    record["contaminated"] += 1
                    if len(record["examples"]) < MAX_EXAMPLES:
                        record["examples"].append(
                            {
                                "id": doc.id,
                                "number": doc.metadata["number"],
                                "eval_item": doc.metadata["eval_item"],
                                "overlap": doc.metadata["overlap"],
                            }
                        )
                    if drop:
                        continue
                yield doc.text

        tokens, documents = write_packed(kept(), tokenizer, folder / f"{number:04d}.bin", folder / f"{number:04d}.idx")
        self.stat_update("tokens", value=tokens, unit="part")
        write_json(folder / f"{number:04d}.json", record | {"tokens": tokens, "documents": documents})


class MergeParts(_PlanStep):
    """The one merge task: parts in task order -> shards, manifest and decontamination report."""

    type = "💽 - WRITER"
    name = "midtrain merge parts"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with recorded(self.plan_path, "merge", rank):
            merge_parts(Path(self.plan_path))
        yield from ()


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    """Tokenizer threads of this task: `tokenizers` reads TOKENIZERS_PARALLELISM at every batch, and
    RAYON_NUM_THREADS when its thread pool starts (the first parallel batch of the process)."""
    saved = {key: os.environ.get(key) for key in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false" if threads == 1 else "true"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---- the merge ------------------------------------------------------------------------------------


def merge_parts(plan_path: Path) -> None:
    """Write every planned stream's shard from its parts, in task order; sum the counts into the
    report. Idempotent: a stream already in the manifest with the same inputs is kept as it is."""
    import numpy as np

    from midtrain.data.decontam import Report
    from midtrain.data.packing import merge_packed, read_manifest, shard_is_complete, write_manifest

    plan, work = load_plan(str(plan_path)), plan_path.parent
    if (work / "merged.json").exists():  # a rerun after the merge finished (parts already removed)
        return
    shard_dir = Path(plan["shards"])
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(shard_dir)
    manifest = read_manifest(shard_dir) if (shard_dir / "manifest.json").exists() else {"streams": {}}
    decontam = plan["decontam"]
    report = Report(decontam["n"], decontam["threshold"], decontam["action"], dict(plan["report"]["base"]))
    dtype = np.dtype(plan["tokenizer"]["dtype"])
    for number, job in enumerate(plan["jobs"]):
        parts = [_part(work, rank, number, dtype) for rank in range(plan["tasks"])]
        _check_documents(job, parts)
        if job["decontaminate"]:
            _count(report, job, parts)
        stream = job["stream"]
        entry = manifest["streams"].get(stream)
        if not (entry and entry.get("inputs") == job["inputs"] and shard_is_complete(shard_dir, entry)):
            entry = merge_packed([(p["bin"], p["idx"]) for p in parts], shard_dir, stream, dtype)
            entry["inputs"] = job["inputs"]
            entry["source"] = job["source"]
        manifest["streams"][stream] = entry
        manifest["tokenizer"] = plan["tokenizer"]["manifest"]
        _write_report(plan, report)  # counts first, as the single-process path
        write_manifest(shard_dir, manifest)
    _write_report(plan, report)
    write_json(work / "merged.json", {"streams": [job["stream"] for job in plan["jobs"]]})
    shutil.rmtree(work / "parts", ignore_errors=True)  # a copy of the shards: not kept
    (work / "eval-index.npz").unlink(missing_ok=True)


def _write_report(plan: dict[str, Any], report: Any) -> None:
    """The report, its sources in the order the single-process path would have listed them."""
    order = {stream: position for position, stream in enumerate(plan["report"]["order"])}
    report.sources = dict(sorted(report.sources.items(), key=lambda item: order.get(item[0], len(order))))
    write_json(Path(plan["report"]["path"]), report.to_json())


def _part(work: Path, rank: int, number: int, dtype: Any) -> dict[str, Any]:
    """One part's record, checked against its files (a part without its record is unfinished)."""
    folder = work / "parts" / f"{rank:05d}"
    path = folder / f"{number:04d}.json"
    read = folder / f"{number:04d}.read.json"
    if not (path.exists() and read.exists()):
        raise MidtrainError.single(
            f"part {number} of task {rank} is missing: that task did not finish; run the same command again", file=path
        )
    record = json.loads(path.read_text()) | json.loads(read.read_text())
    record["bin"], record["idx"] = folder / f"{number:04d}.bin", folder / f"{number:04d}.idx"
    if (
        record["bin"].stat().st_size != record["tokens"] * dtype.itemsize
        or record["idx"].stat().st_size != 8 * record["documents"]
    ):
        raise MidtrainError.single(
            "part does not match its record (changed or truncated); delete the folder and run again", file=record["bin"]
        )
    return record


def _check_documents(job: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """The single-process path's errors for an empty stream, in the same order."""
    origin = job["origin"]
    if origin["kind"] != "corpus" and sum(p["rows"] for p in parts) == 0:
        where = origin.get("origin") or origin["source"]["hub_id"]
        raise MidtrainError.single(f"data source {origin['name']!r} ({where}) has no non-empty documents")


def _count(report: Any, job: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Sum the parts' decontamination counts; list the examples in stream order, numbered as the
    single-process path numbers a source's documents (`<name>:<n>`, n counting every document read)."""
    from midtrain.data.decontam import MAX_EXAMPLES, example

    stream, origin = job["stream"], job["origin"]
    report.sources[stream] = {
        "documents": sum(p["seen"] for p in parts),
        "contaminated": sum(p["contaminated"] for p in parts),
    }
    before = 0
    for part in parts:
        for item in part["examples"]:
            if len(report.examples) >= MAX_EXAMPLES:
                return
            doc_id = item["id"] if origin["kind"] == "corpus" else f"{origin['name']}:{before + item['number']}"
            report.examples.append(example(stream, doc_id, item["eval_item"], item["overlap"]))
        before += part["rows"]


# ---- running it -----------------------------------------------------------------------------------


def run_engine(
    out: Path,
    jobs: list[dict[str, Any]],
    settings: dict[str, Any],
    engine: EngineOptions,
    build_index: Callable[[], EvalIndex] | None,
) -> dict[str, Any] | None:
    """Plan, run both stages, and return the manifest; for Slurm, submit the jobs and return None."""
    engine.check()
    plan_path = write_plan(out, jobs, settings, engine, build_index)
    work = plan_path.parent
    shutil.rmtree(work / "errors", ignore_errors=True)
    tokenize, merge = _executors(str(plan_path), work, engine)
    if engine.executor == "slurm":
        _submit_slurm(merge, tokenize, work, engine)
        return None
    with _ray(engine) if engine.executor == "ray" else contextlib.nullcontext():
        _run_stage(tokenize, work, "tokenize")
        _run_stage(merge, work, "merge")
    from midtrain.data.packing import read_manifest

    return read_manifest(Path(load_plan(str(plan_path))["shards"]))


def _run_stage(executor: Any, work: Path, stage: str) -> None:
    try:
        executor.run()
    except Exception as exc:  # a task's own error is in its record; anything else is said as it is
        if not list((work / "errors").glob(f"{stage}-*.json")):
            raise MidtrainError.single(f"data engine {stage} stage failed: {type(exc).__name__}: {exc}") from None
    if executor.get_incomplete_ranks(skip_completed=True):
        raise failure(work, stage, work / stage)


def _executors(plan_path: str, work: Path, engine: EngineOptions) -> tuple[Any, Any]:
    tokenize_steps = [ReadStreams(plan_path), *engine.extra_steps, Decontaminate(plan_path), PackParts(plan_path)]
    merge_steps = [MergeParts(plan_path)]
    tasks = engine.task_count
    if engine.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return (
            LocalPipelineExecutor(
                tokenize_steps, tasks=tasks, workers=min(engine.workers, tasks), logging_dir=str(work / "tokenize")
            ),
            LocalPipelineExecutor(merge_steps, tasks=1, workers=1, logging_dir=str(work / "merge")),
        )
    if engine.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        common = {"cpus_per_task": engine.cpus_per_task, "mem_per_cpu_gb": engine.mem_per_cpu_gb}
        return (
            RayPipelineExecutor(
                tokenize_steps, tasks=tasks, workers=engine.workers, logging_dir=str(work / "tokenize"), **common
            ),
            RayPipelineExecutor(merge_steps, tasks=1, workers=1, logging_dir=str(work / "merge"), **common),
        )
    from datatrove.executor import SlurmPipelineExecutor

    slurm = {
        "partition": engine.partition,
        "time": engine.time,
        "cpus_per_task": engine.cpus_per_task,
        "mem_per_cpu_gb": engine.mem_per_cpu_gb,
        "qos": engine.qos or "",
        "sbatch_args": dict(engine.sbatch_args),
        "env_command": engine.env_command or _activate_command(),
    }
    tokenize = SlurmPipelineExecutor(
        tokenize_steps,
        tasks=tasks,
        workers=engine.workers,
        job_name="midtrain-tokenize",
        logging_dir=str(work / "tokenize"),
        **slurm,
    )
    merge = SlurmPipelineExecutor(
        merge_steps, tasks=1, job_name="midtrain-merge", depends=tokenize, logging_dir=str(work / "merge"), **slurm
    )
    return tokenize, merge


def _activate_command() -> str:
    """What a Slurm task runs first so that `launch_pickled_pipeline` and midtrain are this install's."""
    if sys.prefix != sys.base_prefix and (Path(sys.prefix) / "bin" / "activate").exists():
        return f"source {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"
    return f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"


def _submit_slurm(merge: Any, tokenize: Any, work: Path, engine: EngineOptions) -> None:
    """Submit the tokenize array job and the merge job that depends on it (datatrove writes each
    job's script, `launch_script.slurm`, and pickled executor into its logging folder first)."""
    script = work / "tokenize" / "launch_script.slurm"
    try:
        merge.run()
    except FileNotFoundError as exc:
        if exc.filename != "sbatch" and shutil.which("sbatch"):
            raise
        raise MidtrainError.single(
            "`sbatch` was not found on PATH: the Slurm executor submits its jobs with it; run this on a Slurm "
            f"login node (the tokenize job's script was written to {script})",
            expected="the sbatch command",
            found="no sbatch on PATH",
        ) from None
    except subprocess.CalledProcessError as exc:
        output = (exc.output or b"").decode(errors="replace").strip()
        raise MidtrainError.single(
            f"sbatch refused the job (exit status {exc.returncode}): {output or 'no output'}", file=script
        ) from None
    engine.submitted = [str(job) for job in (tokenize.job_id, merge.job_id) if job not in (None, -1)]


@contextlib.contextmanager
def _ray(engine: EngineOptions) -> Iterator[None]:
    """Connect to a running Ray cluster (`ray start --head` first) for the run."""
    address = engine.ray_address or os.environ.get("RAY_ADDRESS") or "auto"
    loopback = address.rpartition(":")[0] in ("127.0.0.1", "localhost")
    if loopback:  # a one-machine cluster on loopback: keep Ray's own addresses there too (see _loopback_ok)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise MidtrainError.single(
            "--executor ray needs the `ray` package: pip install 'midtrain[ray]' (or 'ray[default]')"
        ) from None
    started = not ray.is_initialized()
    if started:
        _probe(address)
        if loopback:
            _loopback_ok(address)
        token = _token_auth()
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = (
                ""
                if token
                else " (a cluster with token authentication needs its token here: RAY_AUTH_TOKEN_PATH "
                "or ~/.ray/auth_token, and RAY_AUTH_MODE=token)"
            )
            raise MidtrainError.single(
                f"no Ray cluster to connect to at {address!r}: {exc}{hint}",
                expected="a running cluster: `ray start --head` (or --ray-address HOST:PORT)",
            ) from None
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _token_auth() -> bool:
    """Whether this process will send a Ray authentication token. `ray start` turns token
    authentication on by itself when a token exists (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token), but `ray.init` with an explicit address does not, and then the cluster refuses
    it. Apply `ray start`'s rule here too, unless RAY_AUTH_MODE says otherwise."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    try:  # Ray's own helpers (private): a Ray without them, or with others, is left to itself
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

        if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
            return False
    except (ImportError, AttributeError, TypeError):
        return False
    _enable_token_auth()  # RAY_AUTH_MODE=token for this process, and Ray's cached config refreshed
    return True


def _loopback_ok(address: str) -> None:
    """Ray swaps a loopback address for the machine's network address (and then waits, for minutes,
    for a cluster there) unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set before Ray was imported."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise MidtrainError.single(
            f"Ray was imported in this process before it was told that the cluster at {address!r} is on loopback",
            expected="RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment (for `ray start` too)",
            found=os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "not set"),
        )


def _probe(address: str) -> None:
    """Fail fast when nothing listens at an explicit HOST:PORT: `ray.init` would wait there for
    minutes. ("auto" fails fast by itself; a ray:// client address is left to Ray.)"""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except OSError as exc:
        raise MidtrainError.single(
            f"no Ray cluster to connect to at {address!r}: {exc}",
            expected="a running cluster: `ray start --head` (or --ray-address HOST:PORT)",
        ) from None
