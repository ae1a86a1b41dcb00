"""The datatrove data engine (`data prepare --executor ...`) against the single-process path.

- the local executor with 2 workers, on the built-in corpora and on registry sources (a local
  hub-style dataset read through `datasets.load_dataset`, and local jsonl/parquet/txt files), writes
  the single-process path's shards, manifest and decontamination report byte for byte, so the
  mixture sampler draws the same batches from either;
- parts: cutting a stream into T parts and reading them in order gives the stream, for any T;
- a task that fails, or whose process group is SIGKILLed mid-way, is redone on the rerun while the
  finished task is not, and the output has nothing twice;
- Slurm: the array job's script and pickled executor are generated; with no `sbatch` the error
  names it. Ray: a local cluster (`ray start --head` on loopback), when `ray` is installed.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from midtrain.data import builtin
from midtrain.data.engine import ENGINE_DIR, EngineOptions
from midtrain.data.prepare import PrepareOptions, prepare_corpora, prepare_sources, prepare_tiny
from midtrain.errors import MidtrainError
from midtrain.schema.registry import DataSource
from tests.conftest import REPO, SMALL

pytestmark = pytest.mark.timeout(600)


# ---- fixtures: one single-process baseline per module, the engine runs reuse its corpora and tokenizer


def _eval_file(path: Path) -> Path:
    """Evaluation items that are training documents: decontamination has something to count."""
    texts = [text for _, text in itertools.islice(builtin.prose_documents(), 0, 400, 9)]
    texts += [text for _, text in itertools.islice(builtin.code_documents(), 0, 150, 11)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def _options(out: Path, eval_file: Path, engine: EngineOptions | None = None) -> PrepareOptions:
    return PrepareOptions(out=out, vocab_size=512, sizes=SMALL, extra_eval=[eval_file], progress=False, engine=engine)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The single-process result at tiny scale, with an extra evaluation file; (out, eval file)."""
    root = tmp_path_factory.mktemp("engine-baseline")
    eval_file = _eval_file(root / "eval.jsonl")
    prepare_tiny(_options(root / "single", eval_file))
    return root / "single", eval_file


def _seed(out: Path, baseline: Path) -> Path:
    """A fresh output folder holding the baseline's corpora and tokenizer (kept: same inputs)."""
    for part in ("corpora", "tokenizer"):
        shutil.copytree(baseline / part, out / part)
    return out


def _assert_identical(a: Path, b: Path) -> None:
    """Same shards, manifest and report, byte for byte."""
    for name in ("shards/manifest.json", "decontam.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    manifest = json.loads((a / "shards" / "manifest.json").read_text())
    for entry in manifest["streams"].values():
        for key in ("bin", "idx"):
            assert (a / "shards" / entry[key]).read_bytes() == (b / "shards" / entry[key]).read_bytes(), entry[key]


def _batches(data: Path, shares: dict[str, float], steps: int = 6) -> list[np.ndarray]:
    from midtrain.data.mixture import MixtureSampler, gather
    from midtrain.data.packing import open_shard, read_manifest

    streams = read_manifest(data / "shards")["streams"]
    shards = {name: open_shard(data / "shards", streams[name]) for name in shares}
    sampler = MixtureSampler({name: streams[name]["tokens"] for name in shares}, shares, 32, 8, seed=3)
    return [gather(shards, sampler.batch(step, rank, 2), 32) for step in range(steps) for rank in range(2)]


def _completion(work: Path, stage: str, rank: int) -> Path:
    return work / stage / "completions" / f"{rank:05d}"


def _work_dir(out: Path) -> Path:
    (work,) = [p for p in (out / ENGINE_DIR).iterdir() if p.is_dir()]
    return work


# ---- equality with the single-process path ---------------------------------------------------------


def test_local_engine_on_builtin_corpora_equals_single_process(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    single, eval_file = baseline
    out = _seed(tmp_path / "engine", single)
    manifest = prepare_tiny(_options(out, eval_file, EngineOptions(executor="local", workers=2, tasks=3)))
    _assert_identical(single, out)
    report = json.loads((out / "decontam.json").read_text())
    assert report["sources"]["prose.train"]["contaminated"] > 0 and report["sources"]["code.train"]["contaminated"] > 0
    assert len(manifest["streams"]) == 10
    shares = {"prose.train": 0.4, "code.train": 0.3, "math.train": 0.3}
    assert all(np.array_equal(x, y) for x, y in zip(_batches(single, shares), _batches(out, shares)))
    work = _work_dir(out)
    assert all(_completion(work, "tokenize", r).exists() for r in range(3)) and _completion(work, "merge", 0).exists()
    assert not (work / "parts").exists()  # merged, then removed
    # nothing changed: nothing is planned or run again
    stamp = (out / "shards" / "prose.train.bin").stat().st_mtime_ns
    prepare_tiny(_options(out, eval_file, EngineOptions(executor="local", workers=2)))
    assert (out / "shards" / "prose.train.bin").stat().st_mtime_ns == stamp
    assert [p.name for p in (out / ENGINE_DIR).iterdir()] == [work.name]
    # the shards lost after a finished run: the same plan runs again, from scratch
    shutil.rmtree(out / "shards")
    prepare_tiny(_options(out, eval_file, EngineOptions(executor="local", workers=2, tasks=3)))
    _assert_identical(single, out)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _sources(root: Path, corpora: Path) -> dict[str, DataSource]:
    """A hub-style dataset (subsets `docs` in two files and `qa`) and local files (jsonl, parquet in
    several row groups, text), with blank rows and a copy of a held-out evaluation problem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    heldout = [json.loads(line) for line in (corpora / "math.heldout.jsonl").read_text().splitlines()]
    prose = [text for _, text in itertools.islice(builtin.prose_documents(), 60)]
    docs = [{"text": text, "n": i} for i, text in enumerate(prose)]
    docs[7]["text"] = "   "  # blank: skipped
    docs[20]["text"] = "Worked example.\n" + heldout[0]["prompt"]
    hub = root / "hub-like"
    _write_jsonl(hub / "docs" / "part-0.jsonl", docs[:25])
    _write_jsonl(hub / "docs" / "part-1.jsonl", docs[25:])
    _write_jsonl(
        hub / "qa" / "part-0.jsonl", [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(90)]
    )
    (hub / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: docs\n  data_files:\n  - split: train\n    path: docs/*.jsonl\n"
        "- config_name: qa\n  data_files:\n  - split: train\n    path: qa/*.jsonl\n"
        "---\n"
    )
    files = root / "files"
    _write_jsonl(files / "a.jsonl", [{"text": text} for text in prose[:30]] + [{"text": ""}])
    table = pa.table({"text": [text[:200] for text in prose[10:50]]})
    files.mkdir(exist_ok=True)
    pq.write_table(table, files / "b.parquet", row_group_size=7)
    (files / "c.txt").write_text(prose[55])
    common = {"description": "test", "category": "web", "builtin": "prose"}
    return {
        "web": DataSource.model_validate({**common, "hub_id": str(hub), "subset": "docs"}),
        "qa": DataSource.model_validate(
            {**common, "hub_id": str(hub), "subset": "qa", "text_field": None, "template": "Q: {question}\nA: {answer}"}
        ),
        "mine": DataSource.model_validate({**common, "files": [str(files / "*")]}),
    }


def test_local_engine_on_a_hub_style_dataset_equals_single_process(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    single_tiny, _ = baseline
    corpora = tmp_path / "corpora-source"
    prepare_corpora(PrepareOptions(out=corpora, sizes=SMALL, progress=False))
    sources = _sources(tmp_path, corpora / "corpora")
    tokenizer = str(single_tiny / "tokenizer")
    runs = {}
    for name, engine in (("single", None), ("engine", EngineOptions(executor="local", workers=2, tasks=4))):
        out = tmp_path / name
        shutil.copytree(corpora / "corpora", out / "corpora")
        runs[name] = prepare_sources(out, sources, tokenizer, base=tmp_path, progress=False, engine=engine, sizes=SMALL)
    _assert_identical(tmp_path / "single", tmp_path / "engine")
    streams = runs["engine"]["streams"]
    assert streams["web.train"]["documents"] == 59 - 1  # a blank row skipped, the contaminated one dropped
    assert streams["qa.train"]["documents"] == 90 and streams["mine.train"]["documents"] == 30 + 40 + 1
    report = json.loads((tmp_path / "engine" / "decontam.json").read_text())
    assert report["sources"]["web.train"] == {"documents": 59, "contaminated": 1}
    assert report["examples"][0]["document"] == "web:19"  # numbered as the single path numbers (after the blank)
    shares = {"web.train": 0.5, "qa.train": 0.2, "mine.train": 0.3}
    batches = zip(_batches(tmp_path / "single", shares), _batches(tmp_path / "engine", shares))
    assert all(np.array_equal(x, y) for x, y in batches)


# ---- parts ----------------------------------------------------------------------------------------


def test_parts_of_a_stream_read_in_order_are_the_stream(tmp_path: Path) -> None:
    from midtrain.data.parts import plan_parts, read_part, source_origin
    from midtrain.data.sources import iter_documents

    files = tmp_path / "files"
    long = "x" * 5000
    _write_jsonl(files / "1.jsonl", [{"text": f"doc {i} " + (long if i % 7 == 0 else "")} for i in range(40)])
    (files / "2.jsonl").write_text("")
    (files / "3.jsonl").write_text('{"text": "a"}\n\n\n{"text": " "}\n{"text": "b"}')  # blank lines, no final newline
    (files / "4.txt").write_text("one text document")
    source = DataSource.model_validate(
        {"description": "t", "category": "web", "builtin": "prose", "files": ["files/*"]}
    )
    whole = list(iter_documents(source, "s", base=tmp_path))
    origin = source_origin("s", source, tmp_path)
    for tasks in (1, 2, 3, 5, 8, 13, 64):
        parts = plan_parts(origin, tasks)
        assert len(parts) == tasks
        assert [text for part in parts for _, text in read_part(origin, part)] == whole, tasks


def test_a_bad_line_in_a_later_part_names_its_line(tmp_path: Path) -> None:
    from midtrain.data.parts import plan_parts, read_part, source_origin

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(50)) + "{broken\n")
    source = DataSource.model_validate(
        {"description": "t", "category": "web", "builtin": "prose", "files": ["d.jsonl"]}
    )
    origin = source_origin("s", source, tmp_path)
    last = plan_parts(origin, 4)[-1]
    with pytest.raises(MidtrainError, match="invalid JSON") as caught:
        list(read_part(origin, last))
    assert caught.value.problems[0].line == 51


# ---- a task that fails or is killed is redone, not duplicated --------------------------------------


def test_a_failed_task_is_redone_on_rerun(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.data.engine_steps import BreakOnce

    single, eval_file = baseline
    out = _seed(tmp_path / "engine", single)
    step = BreakOnce(str(tmp_path / "broke"), rank=1, job=4, mode="raise")
    # one worker: task 0 finishes before task 1 fails (with two, the failure stops the pool, task 0 too)
    engine = EngineOptions(executor="local", workers=1, tasks=2, extra_steps=[step])
    with pytest.raises(MidtrainError, match="injected failure") as caught:
        prepare_tiny(_options(out, eval_file, engine))
    assert "run the same command again" in str(caught.value)
    work = _work_dir(out)
    assert _completion(work, "tokenize", 0).exists() and not _completion(work, "tokenize", 1).exists()
    finished = _completion(work, "tokenize", 0).stat().st_mtime_ns
    prepare_tiny(_options(out, eval_file, EngineOptions(executor="local", workers=2, tasks=2, extra_steps=[step])))
    assert _completion(work, "tokenize", 0).stat().st_mtime_ns == finished  # task 0 was not run again
    assert _completion(work, "tokenize", 1).exists()
    _assert_identical(single, out)


KILLED_RUN = """
import json, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from midtrain.data.engine import EngineOptions
from midtrain.data.prepare import PrepareOptions, prepare_tiny
from tests.conftest import SMALL
from tests.data.engine_steps import BreakOnce
step = BreakOnce({marker!r}, rank=1, job=4, mode="stall")
engine = EngineOptions(executor="local", workers=2, tasks=2, extra_steps=[step])
prepare_tiny(PrepareOptions(out=Path({out!r}), vocab_size=512, sizes=SMALL, extra_eval=[Path({eval_file!r})],
                            progress=False, engine=engine))
"""


def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_task_killed_mid_way_is_redone_and_nothing_is_duplicated(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    """The whole run (driver, datatrove's pool and its workers) is SIGKILLed while task 1 is in the
    middle of its third stream; the rerun skips task 0, redoes task 1 from scratch, and the output
    is the single-process one."""
    from tests.data.engine_steps import BreakOnce

    single, eval_file = baseline
    out = _seed(tmp_path / "engine", single)
    marker = tmp_path / "stalled"
    code = KILLED_RUN.format(repo=str(REPO), marker=str(marker), out=str(out), eval_file=str(eval_file))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, env=env, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: marker.exists() or proc.poll() is not None, 240, "task 1 to reach its third stream")
        assert proc.poll() is None, "the run ended before it was killed"
        work = _work_dir(out)
        _wait_for(lambda: _completion(work, "tokenize", 0).exists(), 240, "task 0 to complete")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    killed = work / "parts" / "00001"
    assert (killed / "0000.json").exists() and not (killed / "0004.json").exists()  # cut off mid-way
    assert list(killed.glob(".*.tmp"))  # a half-written part, never renamed into place
    assert not _completion(work, "tokenize", 1).exists()
    finished = _completion(work, "tokenize", 0).stat().st_mtime_ns
    log = (work / "tokenize" / "logs" / "task_00000.log").stat().st_mtime_ns
    step = BreakOnce(str(marker), rank=1, job=4, mode="stall")  # the marker exists: it lets everything through
    prepare_tiny(_options(out, eval_file, EngineOptions(executor="local", workers=2, tasks=2, extra_steps=[step])))
    assert _completion(work, "tokenize", 0).stat().st_mtime_ns == finished
    assert (work / "tokenize" / "logs" / "task_00000.log").stat().st_mtime_ns == log  # not run again
    _assert_identical(single, out)


# ---- Slurm and Ray --------------------------------------------------------------------------------


def test_slurm_job_is_generated_and_a_missing_sbatch_is_named(
    baseline: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dill
    from datatrove.executor import SlurmPipelineExecutor

    from midtrain.data.engine import Decontaminate, PackParts, ReadStreams

    single, eval_file = baseline
    out = _seed(tmp_path / "engine", single)
    monkeypatch.setenv("PATH", str(tmp_path / "no-commands-here"))  # never submit to a real cluster from a test
    engine = EngineOptions(
        executor="slurm", workers=2, tasks=3, partition="cpu", time="01:00:00", sbatch_args={"account": "proj"}
    )
    with pytest.raises(MidtrainError, match="`sbatch` was not found on PATH") as caught:
        prepare_tiny(_options(out, eval_file, engine))
    work = _work_dir(out)
    script = work / "tokenize" / "launch_script.slurm"
    assert str(script) in str(caught.value)
    text = script.read_text()
    for line in (
        "#SBATCH --array=0-2%2",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=01:00:00",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem-per-cpu=2G",
        "#SBATCH --job-name=midtrain-tokenize",
        "#SBATCH --account=proj",
        "#SBATCH --requeue",
        f"launch_pickled_pipeline {work / 'tokenize' / 'executor.pik'}",
    ):
        assert line in text, line
    assert "--qos" not in text and f"source {sys.prefix}/bin/activate" in text
    with open(work / "tokenize" / "executor.pik", "rb") as handle:
        executor = dill.load(handle)
    assert isinstance(executor, SlurmPipelineExecutor) and executor.world_size == 3
    assert [type(step) for step in executor.pipeline] == [ReadStreams, Decontaminate, PackParts]
    assert json.loads((work / "tokenize" / "ranks_to_run.json").read_text()) == [0, 1, 2]
    assert not (out / "shards" / "manifest.json").exists()  # nothing ran here


def test_engine_options_are_checked() -> None:
    from typer.testing import CliRunner

    from midtrain.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "prepare", "--workers", "2"])
    assert result.exit_code != 0 and "only apply to the data engine" in result.output
    result = runner.invoke(app, ["data", "prepare", "--executor", "spark"])
    assert result.exit_code != 0 and "unknown executor" in result.output
    result = runner.invoke(app, ["data", "prepare", "--executor", "slurm"])
    assert result.exit_code != 0 and "needs --partition" in result.output
    result = runner.invoke(app, ["data", "prepare", "--executor", "local", "--workers", "0"])
    assert result.exit_code != 0 and "--workers must be at least 1" in result.output
    result = runner.invoke(app, ["data", "prepare", "--executor", "slurm", "--partition", "p", "--sbatch-arg", "x"])
    assert result.exit_code != 0 and "KEY=VALUE" in result.output


@pytest.fixture
def ray_cluster(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A one-node Ray cluster on loopback (`ray start --head`), in its own process group, killed whole
    at the end. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every address of the cluster on 127.0.0.1
    (else Ray swaps loopback for the machine's network address).

    The cluster uses token authentication, as `ray start` does by itself once ~/.ray/auth_token
    exists, with a token of its own (RAY_AUTH_TOKEN_PATH), so ~/.ray is neither read nor written. The
    test process sees only the token path, not RAY_AUTH_MODE: the engine has to turn token mode on."""
    import contextlib
    import secrets
    import socket
    import tempfile

    if importlib.util.find_spec("ray") is None:  # not imported here: the engine sets Ray's loopback switch first
        pytest.skip("ray is not installed (pip install 'midtrain[ray]')")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="mtray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "unset")  # recorded, then removed: undone, the engine's setting goes too
    monkeypatch.delenv("RAY_AUTH_MODE")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--num-gpus=0",
        "--memory=4000000000",
        "--object-store-memory=200000000",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # ray start's daemons (GCS, raylet, workers) stay in its group
        proc.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_engine_on_a_local_cluster_equals_single_process(
    baseline: tuple[Path, Path], tmp_path: Path, ray_cluster: str
) -> None:
    single, eval_file = baseline
    out = _seed(tmp_path / "engine", single)
    engine = EngineOptions(executor="ray", workers=2, tasks=3, ray_address=ray_cluster, mem_per_cpu_gb=1)
    prepare_tiny(_options(out, eval_file, engine))
    _assert_identical(single, out)
    work = _work_dir(out)
    assert all(_completion(work, "tokenize", r).exists() for r in range(3)) and _completion(work, "merge", 0).exists()


def test_ray_without_a_cluster_is_a_clear_error(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'midtrain[ray]')")
    single, eval_file = baseline
    out = _seed(tmp_path / "engine", single)
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        engine = EngineOptions(executor="ray", workers=2, ray_address=f"127.0.0.1:{probe.getsockname()[1]}")
        with pytest.raises(MidtrainError, match="no Ray cluster to connect to"):
            prepare_tiny(_options(out, eval_file, engine))


def test_the_evaluation_index_round_trips_without_pickle(tmp_path: Path) -> None:
    from midtrain.data.decontam import EvalIndex, load_index, save_index

    index = EvalIndex(n=3)
    for number, text in enumerate(["one two three four", "two three four five six", "alpha", "café naïve ünïcode"]):
        index.add(f"item-{number}", text)
    with open(tmp_path / "index.npz", "wb") as handle:
        save_index(index, handle)
    loaded = load_index(tmp_path / "index.npz")
    assert (loaded.n, loaded.items, loaded.sizes) == (index.n, index.items, index.sizes)
    assert dict(loaded.index) == dict(index.index)
    assert loaded.worst_overlap("x two three four five y") == index.worst_overlap("x two three four five y")
