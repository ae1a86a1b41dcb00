"""Kill-and-resume exactness, 2-process gloo runs, RoPE persistence, and merging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import DIMS, losses, weights


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midtrain", *args], capture_output=True, text=True, timeout=timeout)


def out_of(path: Path) -> Path:
    return Path(json.loads(path.read_text())["out"])


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == wb[key].dtype and bool((wa[key] == wb[key]).all()), f"{key} differs"


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(spec_factory) -> None:  # type: ignore[no-untyped-def]
    reference = spec_factory("reference", steps=24, checkpoint_every=3, ema_decay=0.9)
    assert cli("train", str(reference)).returncode == 0
    killed = spec_factory("killed", steps=24, checkpoint_every=3, ema_decay=0.9)
    checkpoints = out_of(killed) / "checkpoints"
    # Kill at two different moments (mid-step or mid-checkpoint-write, whatever it is doing), then finish.
    for wait_for in (1, 4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "midtrain", "train", str(killed)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 240
        while (
            time.monotonic() < deadline
            and len(list(checkpoints.glob("step-*"))) + (1 if wait_for == 4 else 0) < wait_for
        ):
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = cli("train", str(killed))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out_of(killed) / "summary.json").read_text())
    assert summary["resumed"] is True and summary["steps"] == 24
    assert_same_weights(out_of(reference) / "model", out_of(killed) / "model")
    assert_same_weights(out_of(reference) / "model-ema", out_of(killed) / "model-ema")
    assert losses(out_of(killed)) == losses(out_of(reference))


def test_resume_skips_a_corrupted_checkpoint(spec_factory) -> None:  # type: ignore[no-untyped-def]
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train

    reference = spec_factory("reference", steps=12, checkpoint_every=4)
    train(RunSpec.load(reference), progress=False)
    broken = spec_factory("broken", steps=12, checkpoint_every=4, keep_last=3)
    train(RunSpec.load(broken), progress=False)
    newest = out_of(broken) / "checkpoints" / "step-0000012" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a dying disk
    import shutil

    shutil.rmtree(out_of(broken) / "model")
    with pytest.warns(UserWarning, match="skipping checkpoint .*step-0000012.*truncated"):
        summary = train(RunSpec.load(broken), progress=False)
    assert summary["resumed"] is True
    assert_same_weights(out_of(reference) / "model", out_of(broken) / "model")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_distributed_two_process_gloo_matches_one_process(spec_factory, strategy: str) -> None:  # type: ignore[no-untyped-def]
    single = spec_factory("single", steps=20, checkpoint_every=10)
    double = spec_factory(f"two-{strategy}", steps=20, checkpoint_every=10, strategy=strategy)
    assert cli("train", str(single)).returncode == 0
    port = str(29500 + os.getpid() % 1000 + (7 if strategy == "fsdp" else 0))
    result = cli("train", str(double), "--nproc-per-node", "2", "--master-port", port, "--threads", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = losses(out_of(single)), losses(out_of(double))
    assert len(a) == len(b) == 20
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, list(zip(a, b))
    summary = json.loads((out_of(double) / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["strategy"] == strategy
    assert not (out_of(double) / "dvclive" / "rank1").exists()


@pytest.mark.parametrize(
    ("rope", "expected"),
    [
        ({"theta": 100000.0}, {"rope_type": "default", "rope_theta": 100000.0}),
        (
            {
                "theta": 50000.0,
                "scaling": {
                    "type": "yarn",
                    "factor": 4,
                    "original_max_position_embeddings": 64,
                    "beta_fast": 32,
                    "beta_slow": 1,
                },
            },
            {
                "rope_type": "yarn",
                "rope_theta": 50000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 64,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
            },
        ),
        (
            {
                "scaling": {
                    "type": "llama3",
                    "factor": 2,
                    "original_max_position_embeddings": 64,
                    "low_freq_factor": 1,
                    "high_freq_factor": 4,
                }
            },
            {
                "rope_type": "llama3",
                "factor": 2.0,
                "original_max_position_embeddings": 64,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
            },
        ),
    ],
    ids=["abf", "yarn", "llama3"],
)
def test_rope_stage_writes_a_config_that_reloads(spec_factory, rope: dict, expected: dict) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train

    base = spec_factory("base", steps=3)
    train(RunSpec.load(base), progress=False)
    extended = spec_factory(
        "extended",
        steps=3,
        init={"path": str(out_of(base) / "model")},
        rope=rope,
        sequence_length=128,
        micro_batch=2,
        max_position_embeddings=256,
    )
    train(RunSpec.load(extended), progress=False)
    saved = out_of(extended) / "model"
    config = AutoConfig.from_pretrained(saved)
    for key, value in expected.items():
        assert config.rope_parameters[key] == value, (key, config.rope_parameters)
    assert config.max_position_embeddings == 256
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert model.config.rope_parameters == config.rope_parameters
    out = model(input_ids=torch.randint(0, 512, (1, 128))).logits
    assert torch.isfinite(out).all()


def test_merge_is_the_elementwise_mean(spec_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train

    runs = []
    for seed in range(3):
        path = spec_factory(f"seed{seed}", steps=3, data_seed=seed, seed=seed)
        train(RunSpec.load(path), progress=False)
        runs.append(out_of(path) / "model")
    result = cli("merge", str(tmp_path / "soup"), *map(str, runs))
    assert result.returncode == 0, result.stderr
    merged = weights(tmp_path / "soup")
    inputs = [weights(r) for r in runs]
    for key, tensor in merged.items():
        mean = (torch.stack([w[key].double() for w in inputs]).sum(0) / 3).float()
        assert torch.equal(tensor, mean), key
    weighted = cli("merge", str(tmp_path / "linear"), str(runs[0]), str(runs[1]), "--weights", "0.9,0.1")
    assert weighted.returncode == 0
    lin = weights(tmp_path / "linear")
    key = next(iter(lin))
    assert torch.equal(lin[key], (inputs[0][key].double() * 0.9 + inputs[1][key].double() * 0.1).float())
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "soup") is not None


def test_merge_bad_input(spec_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train

    a = spec_factory("a", steps=2)
    b = spec_factory(
        "b",
        steps=2,
        init={
            "family": "llama",
            "dims": {**DIMS, "intermediate_size": 256},
            "vocab_size": 512,
            "max_position_embeddings": 64,
        },
    )
    train(RunSpec.load(a), progress=False)
    train(RunSpec.load(b), progress=False)
    mismatch = cli("merge", str(tmp_path / "m"), str(out_of(a) / "model"), str(out_of(b) / "model"))
    assert mismatch.returncode == 2 and "shape" in mismatch.stderr and "Traceback" not in mismatch.stderr
    assert not (tmp_path / "m").exists()
    assert (
        "sum to 1"
        in cli(
            "merge", str(tmp_path / "w"), str(out_of(a) / "model"), str(out_of(a) / "model"), "--weights", "0.5,0.6"
        ).stderr
    )
    assert "not found" in cli("merge", str(tmp_path / "x"), str(tmp_path / "nope"), str(out_of(a) / "model")).stderr
