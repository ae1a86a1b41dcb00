"""Distributed (DCP) checkpoints: 2-process gloo FSDP2 runs killed with SIGKILL and resumed, resumed on
another number of processes, verified (a broken one falls back), and exported to Hugging Face
directories that `from_pretrained` loads.

Every process a test starts runs in its own process group (torchrun and its ranks alike), and the
group is killed if the test fails or times out, so nothing is left behind."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_spec, weights, write_spec

pytestmark = pytest.mark.slow  # 2-process runs; about 2 minutes for the module on 2 cores

STEPS = 24
EVERY = 4
TIMEOUT = 600


def dcp_spec(prepared: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "steps": STEPS,
        "checkpoint_every": EVERY,
        "keep_last": 4,
        "ema_decay": 0.9,
        "polyak": {"checkpoints": 2},
        "strategy": "fsdp",
    }
    return make_spec(prepared, out, **{**settings, **overrides})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Group:
    """A `midtrain` command in a process group of its own, killed as a whole when the test ends."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "midtrain", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()

    def wait(self, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


@pytest.fixture
def groups() -> Iterator[list[Group]]:
    started: list[Group] = []
    yield started
    for group in started:
        if group.proc.poll() is None:
            group.kill()


def midtrain(started: list[Group], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    group = Group(*args, env=env)
    started.append(group)
    return group.wait()


def train_two(started: list[Group], spec: Path) -> subprocess.CompletedProcess:
    port = str(free_port())
    return midtrain(started, "train", str(spec), "--nproc-per-node", "2", "--master-port", port, "--threads", "1")


def train_one(spec: Path) -> dict[str, Any]:
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train

    return train(RunSpec.load(spec), progress=False)


def losses_by_step(out: Path) -> dict[int, float]:
    with open(out / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    at = rows[0].index("step")
    return {int(row[at]): float(row[-1]) for row in rows[1:]}


def assert_equal(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == wb[key].dtype and bool((wa[key] == wb[key]).all()), f"{key} differs"


def assert_close(a: Path, b: Path, atol: float = 2e-5) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=atol, rtol=1e-4), (key, (wa[key] - wb[key]).abs().max())


def copy_checkpoint(source: Path, run_out: Path) -> None:
    (run_out / "checkpoints").mkdir(parents=True)
    shutil.copytree(source, run_out / "checkpoints" / source.name)


@pytest.fixture(scope="module")
def reference(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An uninterrupted 2-process FSDP2 run: its output directory."""
    root = tmp_path_factory.mktemp("dcp-reference")
    spec = write_spec(root / "spec.json", dcp_spec(prepared, root / "out"))
    started: list[Group] = []
    try:
        result = train_two(started, spec)
    finally:
        for group in started:
            group.kill() if group.proc.poll() is None else None
    assert result.returncode == 0, result.stderr[-4000:]
    yield root / "out"


def test_a_two_process_run_writes_dcp_checkpoints(reference: Path) -> None:
    from transformers import AutoModelForCausalLM

    from midtrain.train import checkpoint as ckpt

    checkpoints = reference / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(checkpoints)] == [f"step-{s:07d}" for s in (12, 16, 20, 24)]
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # no temporary left
    final = checkpoints / f"step-{STEPS:07d}"
    names = {p.name for p in final.iterdir()}
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "rank-00000.json", "rank-00001.json"} <= names
    assert {"state.json", "config.json", "manifest.json"} <= names
    manifest = json.loads((final / "manifest.json").read_text())
    assert (
        manifest["format"] == "dcp" and manifest["world"] == 2 and set(manifest["files"]) == names - {"manifest.json"}
    )
    assert ckpt.verify(final) is None and ckpt.is_dcp(final)
    state = json.loads((final / "state.json").read_text())
    assert state["step"] == STEPS and state["world"] == 2 and state["strategy"] == "fsdp"
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["strategy"] == "fsdp"
    for name in ("model", "model-ema", "model-polyak"):
        model = AutoModelForCausalLM.from_pretrained(reference / name, trust_remote_code=False)
        assert model.config.use_cache is True
    assert json.loads((reference / "model-ema" / "midtrain.json").read_text())["average"] == "ema"


@pytest.mark.slow
def test_fsdp_run_killed_and_resumed_is_bitwise_identical(
    prepared: Path, tmp_path: Path, reference: Path, groups
) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL to the whole torchrun group as soon as its first checkpoint is complete: it writes them
    asynchronously, so that is when the next one is being written in the background. Then the same
    command again (writing synchronously): the same weights, averages and losses, bit for bit."""
    spec = write_spec(tmp_path / "spec.json", dcp_spec(prepared, tmp_path / "out"))
    checkpoints = tmp_path / "out" / "checkpoints"
    port = str(free_port())
    killed = Group(
        "train", str(spec), "--nproc-per-node", "2", "--master-port", port, "--threads", "1", "--async-checkpoint"
    )
    groups.append(killed)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not (checkpoints / f"step-{EVERY:07d}" / "manifest.json").exists():
        assert killed.proc.poll() is None, killed.proc.communicate()[1][-3000:]
        time.sleep(0.01)
    killed.kill()
    assert not (tmp_path / "out" / "summary.json").exists()  # killed before its end
    result = train_two(groups, spec)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["resumed"] is True and summary["steps"] == STEPS
    for name in ("model", "model-ema", "model-polyak"):
        assert_equal(reference / name, tmp_path / "out" / name)
    assert losses_by_step(tmp_path / "out") == losses_by_step(reference)


def test_resume_on_another_number_of_processes(prepared: Path, tmp_path: Path, reference: Path, groups) -> None:  # type: ignore[no-untyped-def]
    """2 → 1: the 2-process run's step-12 checkpoint continued on one process; 1 → 2: a one-process
    run's step-12 checkpoint (single-file format) continued on two. Both reach the 2-process
    continuation's weights and losses to float tolerance."""
    from midtrain.train import checkpoint as ckpt

    two_to_one = tmp_path / "two-to-one"
    copy_checkpoint(reference / "checkpoints" / "step-0000012", two_to_one)
    summary = train_one(write_spec(tmp_path / "a.json", dcp_spec(prepared, two_to_one)))
    assert summary["resumed"] is True and summary["world_size"] == 1
    assert not ckpt.is_dcp(two_to_one / "checkpoints" / f"step-{STEPS:07d}")  # one process writes single files
    for name in ("model", "model-ema", "model-polyak"):
        assert_close(reference / name, two_to_one / name)
    expected = losses_by_step(reference)
    continued = losses_by_step(two_to_one)
    assert sorted(continued) == list(range(13, STEPS + 1))
    assert all(abs(continued[s] - expected[s]) < 1e-5 for s in continued), (continued, expected)

    one = tmp_path / "one"
    train_one(write_spec(tmp_path / "b.json", dcp_spec(prepared, one)))
    one_to_two = tmp_path / "one-to-two"
    copy_checkpoint(one / "checkpoints" / "step-0000012", one_to_two)
    result = train_two(groups, write_spec(tmp_path / "c.json", dcp_spec(prepared, one_to_two)))
    assert result.returncode == 0, result.stderr[-4000:]
    assert ckpt.is_dcp(one_to_two / "checkpoints" / f"step-{STEPS:07d}")
    for name in ("model", "model-ema", "model-polyak"):
        assert_close(reference / name, one_to_two / name)
    continued = losses_by_step(one_to_two)
    assert all(abs(continued[s] - expected[s]) < 1e-5 for s in continued), (continued, expected)


def test_export_loads_with_from_pretrained(tmp_path: Path, reference: Path, groups) -> None:  # type: ignore[no-untyped-def]
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from transformers import AutoModelForCausalLM

    final = reference / "checkpoints" / f"step-{STEPS:07d}"
    out = tmp_path / "exported"
    result = midtrain(groups, "export", str(final), str(out), "--max-shard-size", "200KB")
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    # torch's own converter reads the same checkpoint by another path
    dcp_to_torch_save(final, tmp_path / "whole.pt")
    whole = torch.load(tmp_path / "whole.pt", weights_only=False)["model"]
    state = model.state_dict()
    assert state.keys() == whole.keys()
    for key, tensor in state.items():
        assert torch.equal(tensor, whole[key]), key
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()
    # the run's own final model (exported by its ranks at its end) holds the same weights
    assert_equal(reference / "model", out) if len(files) == 1 else None
    run_model = AutoModelForCausalLM.from_pretrained(reference / "model", trust_remote_code=False).state_dict()
    assert all(torch.equal(run_model[k], state[k]) for k in state)
    ema = midtrain(groups, "export", str(reference), str(tmp_path / "ema"), "--weights", "ema")
    assert ema.returncode == 0, ema.stderr[-3000:]
    assert_equal(reference / "model-ema", tmp_path / "ema")


def test_export_of_a_single_file_checkpoint_equals_the_saved_model(prepared: Path, tmp_path: Path, groups) -> None:  # type: ignore[no-untyped-def]
    spec = write_spec(tmp_path / "spec.json", make_spec(prepared, tmp_path / "run", steps=4, checkpoint_every=2))
    train_one(spec)
    result = midtrain(groups, "export", str(tmp_path / "run" / "checkpoints"), str(tmp_path / "exported"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step-0000004" in result.stdout
    assert_equal(tmp_path / "run" / "model", tmp_path / "exported")


def test_export_bad_input(tmp_path: Path, reference: Path, groups) -> None:  # type: ignore[no-untyped-def]
    def refused(result: subprocess.CompletedProcess, *words: str) -> None:
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        for word in words:
            assert word in result.stderr, (word, result.stderr)

    final = reference / "checkpoints" / f"step-{STEPS:07d}"
    refused(midtrain(groups, "export", str(tmp_path / "nope"), str(tmp_path / "o")), "not found")
    refused(midtrain(groups, "export", str(final), str(tmp_path / "o"), "--weights", "best"), "--weights", "ema")
    refused(midtrain(groups, "export", str(final), str(tmp_path / "o"), "--max-shard-size", "big"), "--max-shard-size")
    broken = tmp_path / "run" / "checkpoints" / final.name
    shutil.copytree(final, broken)
    (broken / "manifest.json").unlink()
    refused(midtrain(groups, "export", str(broken), str(tmp_path / "o")), "no manifest")
    refused(midtrain(groups, "export", str(tmp_path / "run"), str(tmp_path / "o")), "no usable checkpoint")
    assert not (tmp_path / "o").exists()


def test_a_broken_dcp_checkpoint_falls_back(prepared: Path, tmp_path: Path, reference: Path) -> None:
    """The newest checkpoint corrupted (one byte of a shard), the one before incomplete (no manifest):
    the run resumes from the one before those, and reaches the same weights."""
    out = tmp_path / "out"
    shutil.copytree(reference / "checkpoints", out / "checkpoints")
    shard = out / "checkpoints" / "step-0000024" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    (out / "checkpoints" / "step-0000020" / "manifest.json").unlink()
    (out / "checkpoints" / ".step-0000028.dcp.tmp").mkdir()  # a write killed half-way
    with pytest.warns(UserWarning) as caught:
        summary = train_one(write_spec(tmp_path / "spec.json", dcp_spec(prepared, out)))
    messages = [str(w.message) for w in caught]
    assert any("step-0000024" in m and "sha256 mismatch" in m for m in messages), messages
    assert any("step-0000020" in m and "no manifest" in m for m in messages), messages
    assert summary["resumed"] is True
    assert sorted(losses_by_step(out)) == list(range(17, STEPS + 1))
    assert not (out / "checkpoints" / ".step-0000028.dcp.tmp").exists()
    assert_close(reference / "model", out / "model")


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned",))


def test_dcp_metadata_is_never_unpickled_freely(tmp_path: Path, reference: Path) -> None:
    from midtrain.errors import MidtrainError
    from midtrain.train import checkpoint as ckpt
    from midtrain.train.dcp import read_metadata

    checkpoint = tmp_path / f"step-{STEPS:07d}"
    shutil.copytree(reference / "checkpoints" / checkpoint.name, checkpoint)
    (checkpoint / ".metadata").write_bytes(pickle.dumps(_Payload()))
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"][".metadata"] = ckpt.file_entry(checkpoint / ".metadata")  # a manifest forged to match
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    assert ckpt.verify(checkpoint) is None
    os.chdir(tmp_path)
    with pytest.raises(MidtrainError, match="not part of DCP's metadata"):
        read_metadata(checkpoint)
    assert not (tmp_path / "pwned").exists()


def test_optimizer_from_a_distributed_run(prepared: Path, tmp_path: Path, reference: Path) -> None:
    """A run continuing the final optimizer state of a 2-process run (its DCP checkpoint), on one
    process: the moments are the checkpoint's; another optimizer type is refused with a message."""
    import torch

    from midtrain.errors import MidtrainError
    from midtrain.train.config import RunSpec
    from midtrain.train.dcp import load_keys
    from midtrain.train.loop import Trainer
    from midtrain.train.model import named_parameters
    from midtrain.train.resume import carry_optimizer

    spec = write_spec(tmp_path / "a.json", make_spec(prepared, tmp_path / "a", steps=2, optimizer_from=str(reference)))
    trainer = Trainer(RunSpec.load(spec), progress=False)
    carry_optimizer(trainer)
    name, param = next(iter(named_parameters(trainer.model)))
    final = reference / "checkpoints" / f"step-{STEPS:07d}"
    key = f"optimizer.state.{name}.exp_avg"
    assert torch.equal(trainer.optimizer.state[param]["exp_avg"], load_keys(final, [key])[key])
    assert trainer.optimizer.param_groups[0]["lr"] == trainer.lr(0)  # the settings stay this run's
    other = make_spec(
        prepared,
        tmp_path / "b",
        steps=2,
        optimizer_from=str(reference),
        optimizer={"type": "ademamix", "ademamix": {"alpha": 5.0, "beta3": 0.999}},
    )
    trainer = Trainer(RunSpec.load(write_spec(tmp_path / "b.json", other)), progress=False)
    with pytest.raises(MidtrainError, match="another optimizer type") as caught:
        carry_optimizer(trainer)
    assert "exp_avg_slow" in caught.value.render() and "optimizer_from" in caught.value.render()
