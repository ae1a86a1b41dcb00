"""`auto` run settings (midtrain/train/auto.py): the resolution rules against made-up machines,
the full-scale plan's specs, and a real run that prints, records and keeps its resolved choices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from midtrain.train.auto import (
    MEMORY_HEADROOM,
    Footprint,
    Machine,
    compile_cache_dir,
    describe,
    memory_bytes,
    resolve,
)
from midtrain.train.config import RunSpec

GIB = 2**30
LAPTOP = Machine("cpu", 24 * GIB, bf16=False, bf16_reason="no native bf16", cores=2)
H100 = Machine("cuda", 79 * GIB, bf16=True, bf16_reason="GPU with bf16", flash_attn=True, cores=16)
SMALL_GPU = Machine("cuda", 32 * GIB, bf16=True, bf16_reason="GPU with bf16", flash_attn=False, cores=8)
TINY = Footprint(parameters=1_400_000, hidden=128, layers=4, vocab=2048, heads=4, intermediate=384)
LLAMA_8B = Footprint(parameters=8_030_000_000, hidden=4096, layers=32, vocab=128_256, heads=32, intermediate=14_336)


def spec(**overrides: Any) -> RunSpec:
    data: dict[str, Any] = {
        "name": "t/run",
        "out": "out",
        "tokenizer": "tok",
        "data": "data",
        "init": {"path": "base"},
        "streams": {"prose.train": 1.0},
        "sequence_length": 128,
        "global_batch": 16,
        "steps": 200,
        "schedule": {"type": "constant", "lr": 1e-3},
    }
    data.update(overrides)
    return RunSpec.model_validate(data)


def values(choices: dict[str, Any]) -> dict[str, Any]:
    return {name: choice.value for name, choice in choices.items()}


def fits(model: Footprint, machine: Machine, micro: int, seq: int, checkpointing: bool, shards: int = 1) -> bool:
    need = memory_bytes(
        model,
        micro_batch=micro,
        sequence_length=seq,
        precision="bf16" if machine.bf16 else "fp32",
        checkpointing=checkpointing,
        attention="sdpa",
        shards=shards,
    )
    return need <= machine.free_bytes * MEMORY_HEADROOM


def test_defaults_are_auto() -> None:
    made = spec()
    assert (made.precision, made.compile, made.attn_implementation) == ("auto", "auto", "auto")
    assert (made.optimizer_kernel, made.micro_batch, made.activation_checkpointing) == ("auto", "auto", "auto")


def test_tiny_run_on_a_laptop_cpu() -> None:
    chosen = values(resolve(spec(), LAPTOP, TINY))
    assert chosen == {
        "precision": "fp32",
        "attn_implementation": "sdpa",
        "optimizer_kernel": "foreach",
        "compile": False,  # a few seconds of compute does not repay compiling
        "micro_batch": 16,  # the whole batch fits
        "activation_checkpointing": False,
    }


def test_8b_on_h100s_with_fsdp_takes_the_largest_micro_batch_that_fits() -> None:
    run = spec(sequence_length=4096, global_batch=512, steps=5000)
    chosen = values(resolve(run, H100, LLAMA_8B, world=8, shards=8))
    assert chosen["precision"] == "bf16"
    assert chosen["attn_implementation"] == "flash_attention_2"
    assert chosen["optimizer_kernel"] == "fused"
    assert chosen["compile"] is True
    micro = chosen["micro_batch"]
    assert chosen["activation_checkpointing"] is False
    assert (512 // 8) % micro == 0
    assert fits(LLAMA_8B, H100, micro, 4096, False, shards=8)
    bigger = [m for m in range(micro + 1, 65) if 64 % m == 0]
    assert not fits(LLAMA_8B, H100, bigger[0], 4096, False, shards=8)


def test_checkpointing_only_when_one_sequence_does_not_fit() -> None:
    run = spec(sequence_length=4096, global_batch=64, steps=1000)
    assert not fits(LLAMA_8B, SMALL_GPU, 1, 4096, False, shards=8)
    chosen = resolve(run, SMALL_GPU, LLAMA_8B, world=8, shards=8)
    assert chosen["activation_checkpointing"].value is True
    assert "not even one sequence" in chosen["activation_checkpointing"].reason
    assert chosen["attn_implementation"].value == "sdpa"  # no flash_attn installed
    assert fits(LLAMA_8B, SMALL_GPU, chosen["micro_batch"].value, 4096, True, shards=8)


def test_nothing_fits_gives_micro_batch_one_with_checkpointing() -> None:
    chosen = values(resolve(spec(sequence_length=4096), LAPTOP, LLAMA_8B))  # 8B on a 24 GiB CPU: no
    assert chosen["micro_batch"] == 1 and chosen["activation_checkpointing"] is True


def test_micro_batch_divides_every_ramp_phase() -> None:
    run = spec(global_batch=12, batch_ramp=[{"step": 50, "global_batch": 18}])
    chosen = values(resolve(run, LAPTOP, TINY))
    assert chosen["micro_batch"] == 6  # gcd(12, 18)


def test_memory_grows_with_micro_batch_and_shrinks_with_checkpointing_and_shards() -> None:
    def need(**kw: Any) -> int:
        settings: dict[str, Any] = {
            "micro_batch": 2,
            "sequence_length": 2048,
            "precision": "bf16",
            "checkpointing": False,
            "attention": "sdpa",
            "shards": 1,
        }
        settings.update(kw)
        return memory_bytes(LLAMA_8B, **settings)

    assert need(micro_batch=4) > need()
    assert need(checkpointing=True) < need()
    assert need(shards=8) < need()
    assert need(attention="eager") > need()
    assert need(precision="fp32") > need()


def test_explicit_settings_are_kept() -> None:
    run = spec(
        precision="bf16",
        compile=True,
        attn_implementation="eager",
        optimizer_kernel="loop",
        micro_batch=4,
        activation_checkpointing=True,
    )
    chosen = resolve(run, LAPTOP, TINY)
    assert values(chosen) == {
        "precision": "bf16",
        "attn_implementation": "eager",
        "optimizer_kernel": "loop",
        "compile": True,
        "micro_batch": 4,
        "activation_checkpointing": True,
    }
    assert all(c.reason == "as specified" for c in chosen.values())


def test_given_micro_batch_decides_checkpointing() -> None:
    run = spec(sequence_length=4096, global_batch=64, micro_batch=8, steps=1000)
    chosen = resolve(run, H100, LLAMA_8B, world=8, shards=8)
    assert chosen["micro_batch"].value == 8
    assert chosen["activation_checkpointing"].value is (not fits(LLAMA_8B, H100, 8, 4096, False, shards=8))


@pytest.mark.parametrize(
    ("machine", "steps", "tokens_per_step", "expected"),
    [
        (H100, 1000, 2048, True),
        (H100, 50, 2048, False),  # too short to repay compiling
        (LAPTOP, 1000, 2048, False),  # seconds of compute
        (LAPTOP, 200_000, 2048 * 32, True),  # hours of compute
    ],
)
def test_compile_when_the_run_repays_it(machine: Machine, steps: int, tokens_per_step: int, expected: bool) -> None:
    run = spec(steps=steps, global_batch=tokens_per_step // 128)
    assert resolve(run, machine, TINY)["compile"].value is expected


def test_no_compiler_no_compile() -> None:
    bare = Machine("cpu", 24 * GIB, bf16=False, bf16_reason="", compiler=False, cores=2)
    chosen = resolve(spec(steps=200_000, global_batch=512), bare, TINY)["compile"]
    assert chosen.value is False and "compiler" in chosen.reason


def test_model_without_sdpa_gets_eager_attention() -> None:
    model = Footprint(**{**TINY.__dict__, "sdpa": False})
    assert resolve(spec(), LAPTOP, model)["attn_implementation"].value == "eager"


def test_other_optimizers_leave_the_kernel_alone() -> None:
    run = spec(optimizer={"type": "muon"})
    assert resolve(run, H100, TINY)["optimizer_kernel"].value == "loop"


def test_describe_is_one_line() -> None:
    line = describe(resolve(spec(), LAPTOP, TINY))
    assert "\n" not in line and "fp32" in line and "micro-batch 16" in line


def test_compile_cache_is_persistent_and_overridable(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_dir() == tmp_path / "midtrain" / "torch-compile"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"


def test_full_scale_plan_leaves_the_machine_settings_to_auto(tmp_path: Path) -> None:
    from midtrain.plan.api import make_plan
    from midtrain.plan.request import PlanRequest

    root = Path(__file__).resolve().parents[2]
    plan = make_plan(PlanRequest(recipe="olmo-2-1124-7b", scale="full"), root, resolve=False)
    runs = plan.mid.runs
    assert runs
    for run in runs.values():
        assert run.micro_batch == "auto" and run.activation_checkpointing == "auto"
        assert run.compile == "auto" and run.attn_implementation == "auto" and run.optimizer_kernel == "auto"
    # on this project's 24 GiB CPU build machine a 7B run cannot fit: auto says so instead of guessing
    anneal = next(iter(runs.values()))
    olmo_7b = Footprint(parameters=7_300_000_000, hidden=4096, layers=32, vocab=100_352, heads=32, intermediate=11_008)
    chosen = resolve(anneal, LAPTOP, olmo_7b)
    assert chosen["micro_batch"].value == 1 and chosen["activation_checkpointing"].value is True
    assert "not even one sequence" in chosen["micro_batch"].reason
    # on 8 H100s with FSDP it trains without recomputation
    on_gpus = values(resolve(anneal, H100, olmo_7b, world=8, shards=8))
    assert on_gpus["activation_checkpointing"] is False and on_gpus["precision"] == "bf16"
    assert on_gpus["attn_implementation"] == "flash_attention_2" and on_gpus["optimizer_kernel"] == "fused"
    assert on_gpus["compile"] is True


def test_a_run_prints_records_and_keeps_its_choices(spec_factory, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from .test_trainer import run

    path = spec_factory("auto", steps=4, micro_batch="auto", checkpoint_every=2)
    run(path)
    out = tmp_path / "auto"
    record = json.loads((out / "resolved.json").read_text())
    assert record["micro_batch"]["value"] == 8  # the whole batch of 8 fits
    assert record["compile"]["value"] is False and record["attn_implementation"]["value"] == "sdpa"
    assert "micro-batch 8" in capsys.readouterr().out
    # a run that finds a record (a resume) keeps what it says, even where this machine would choose otherwise
    record["micro_batch"] = {"value": 2, "reason": "recorded"}
    (out / "resolved.json").write_text(json.dumps(record))
    run(path)
    again = json.loads((out / "resolved.json").read_text())
    assert again["micro_batch"]["value"] == 2 and "as resolved when the run started" in again["micro_batch"]["reason"]
