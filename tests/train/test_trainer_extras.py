"""Batch ramps, carried optimizer state (optimizer_from), save_at snapshots, Muon and AdEMAMix.

A "kill" here is an exception raised from a callback before a step: the process keeps nothing but
what the run wrote (checkpoints, snapshots), as after a SIGKILL between two steps; the SIGKILL test
in test_resume_distributed_rope_merge.py covers kills at arbitrary moments."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from midtrain.errors import MidtrainError
from midtrain.train.callbacks import Callback, Throughput
from midtrain.train.config import RunSpec

from .conftest import DIMS, losses, make_spec, weights

MUON = {"type": "muon", "muon": {"rms_match": 0.2}, "no_decay": ["norms", "biases", "embeddings"]}
ADEMAMIX = {"type": "ademamix", "ademamix": {"alpha": 5.0, "beta3": 0.999, "warmup_steps": 4}}
RAMP = [{"step": 3, "global_batch": 16}, {"step": 5, "global_batch": 12}]


class Killed(Exception):
    pass


class Recorder(Callback):
    """Tokens per step, the optimizer state at the start, and a "kill" before step `kill_at`."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at = kill_at
        self.tokens: list[int] = []
        self.start_state: dict[str, dict[str, Any]] = {}
        self.start_groups: list[dict[str, Any]] = []

    def on_fit_start(self, trainer) -> None:  # type: ignore[no-untyped-def]
        from midtrain.train.model import named_parameters

        names = {id(p): n for n, p in named_parameters(trainer.model)}
        self.start_state = {
            names[id(p)]: {k: v.clone() if hasattr(v, "clone") else v for k, v in s.items()}
            for p, s in trainer.optimizer.state.items()
        }
        self.start_groups = [{k: v for k, v in g.items() if k != "params"} for g in trainer.optimizer.param_groups]

    def on_step_start(self, trainer, step: int) -> None:  # type: ignore[no-untyped-def]
        if step == self.kill_at:
            raise Killed

    def on_step_end(self, trainer, step: int, result) -> None:  # type: ignore[no-untyped-def]
        self.tokens.append(result.tokens)


def spec(prepared: Path, out: Path, **overrides: Any) -> RunSpec:
    base: dict[str, Any] = {"steps": 6, "checkpoint_every": 2}
    return RunSpec.model_validate(make_spec(prepared, out, **{**base, **overrides}))


def fit(run: RunSpec, *callbacks: Callback) -> dict[str, Any]:
    from midtrain.train.loop import Trainer

    return Trainer(run, progress=False, callbacks=callbacks).fit()


def killed_and_resumed(run: RunSpec, kill_at: int) -> dict[str, Any]:
    with pytest.raises(Killed):
        fit(run, Recorder(kill_at=kill_at))
    return fit(run)


def assert_same(a: Path, b: Path) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs"


# ---- batch ramp ----


def test_batch_ramp_steps_consume_their_batch_and_report_its_tokens(prepared: Path, tmp_path: Path) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from midtrain.train.loop import Trainer, _loss_fn

    run = spec(prepared, tmp_path / "ramp", batch_ramp=RAMP, save_at=[3])
    recorder = Recorder()
    trainer = Trainer(run, progress=False, callbacks=[recorder, Throughput()])
    summary = trainer.fit()
    sizes = [8, 8, 8, 16, 16, 12]
    assert [trainer.global_batch(s) for s in range(6)] == sizes
    assert recorder.tokens == [n * 64 for n in sizes]
    assert summary["tokens_seen"] == sum(sizes) * 64
    meter = trainer.callbacks[-1]
    assert isinstance(meter, Throughput) and meter.tokens == sum(sizes[1:]) * 64  # the first step is not timed
    # the data position advances by what each step consumed: step 3 reads positions 24..39
    assert trainer.sampler.rank_slice(3) == (24, 16) and trainer.sampler.rank_slice(5) == (56, 12)
    # the logged loss of step 3 is the mean over its 16 sequences' tokens, with the weights after step 3
    model = AutoModelForCausalLM.from_pretrained(run.out / "at-step-3" / "model")
    windows = torch.from_numpy(trainer.sampler.read(trainer.shards, 3))
    assert windows.shape == (16, 65)
    with torch.no_grad():
        ce, _ = _loss_fn(model(input_ids=windows[:, :-1]).logits, windows[:, 1:], None)
    assert float(ce) / (16 * 64) == pytest.approx(losses(run.out)[3], rel=1e-5)
    # the LR stays a function of the step: the first three steps equal a run without the ramp
    plain = spec(prepared, tmp_path / "plain")
    fit(plain)
    assert losses(plain.out)[:3] == losses(run.out)[:3] and losses(plain.out)[3] != losses(run.out)[3]
    assert np.isfinite(losses(run.out)).all()


@pytest.mark.parametrize("kill_at", [3, 5])  # just before the ramp's first phase, and inside its second
def test_batch_ramp_resume_is_exact(prepared: Path, tmp_path: Path, kill_at: int) -> None:
    reference = spec(prepared, tmp_path / "reference", batch_ramp=RAMP, ema_decay=0.9)
    fit(reference)
    run = spec(prepared, tmp_path / "killed", batch_ramp=RAMP, ema_decay=0.9)
    summary = killed_and_resumed(run, kill_at)
    assert summary["resumed"] is True and summary["tokens_seen"] == (3 * 8 + 2 * 16 + 12) * 64
    assert_same(reference.out / "model", run.out / "model")
    assert_same(reference.out / "model-ema", run.out / "model-ema")
    assert losses(run.out) == losses(reference.out)


def test_batch_that_does_not_split_over_the_ranks(prepared: Path, tmp_path: Path) -> None:
    import torch

    from midtrain.train.distributed import Dist
    from midtrain.train.loop import Trainer

    run = spec(prepared, tmp_path / "out", global_batch=8, micro_batch=2, batch_ramp=[{"step": 2, "global_batch": 6}])
    with pytest.raises(MidtrainError) as caught:
        Trainer(run, dist=Dist(0, 4, 0, 4, torch.device("cpu")), progress=False)
    text = str(caught.value)
    assert "batch_ramp[0].global_batch" in text and "6 sequences" in text and "multiple of 4" in text


@pytest.mark.slow
def test_sigkill_during_a_ramped_muon_run_with_snapshots_resumes_exactly(prepared: Path, tmp_path: Path) -> None:
    """Killed twice with SIGKILL (after its first checkpoint, then just after the snapshot at step 5,
    whatever it is doing then), a run with a batch ramp, Muon and save_at ends as an uninterrupted one."""
    import signal
    import subprocess
    import sys
    import time

    options: dict[str, Any] = {
        "steps": 12,
        "checkpoint_every": 3,
        "save_at": [5],
        "batch_ramp": [{"step": 4, "global_batch": 16}],
        "optimizer": MUON,
    }
    reference = spec(prepared, tmp_path / "reference", **options)
    fit(reference)
    run = spec(prepared, tmp_path / "killed", **options)
    path = tmp_path / "killed.json"
    path.write_text(run.model_dump_json())
    command = [sys.executable, "-m", "midtrain", "train", str(path)]
    snapshot = run.out / "at-step-5" / "model"
    for done in (lambda: any((run.out / "checkpoints").glob("step-*")), lambda: snapshot.exists()):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not done():
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert snapshot.exists()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run.out / "summary.json").read_text())["resumed"] is True
    assert_same(reference.out / "model", run.out / "model")
    assert_same(reference.out / "at-step-5" / "model", snapshot)
    assert losses(run.out) == losses(reference.out)
    assert not [p for p in snapshot.parent.iterdir() if p.name != "model"]  # no temporaries left behind


# ---- optimizer_from ----


@pytest.fixture(scope="module")
def first_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> RunSpec:
    run = spec(prepared, tmp_path_factory.mktemp("first") / "out", steps=4, checkpoint_every=3)
    fit(run)
    return run


def test_optimizer_from_starts_from_the_final_state(first_run: RunSpec, prepared: Path, tmp_path: Path) -> None:
    import torch

    from midtrain.train import checkpoint as ckpt

    final = ckpt.load_optimizer(first_run.out / "checkpoints" / "step-0000004")
    settings = {"weight_decay": 0.05, "betas": [0.8, 0.9]}
    carried = Recorder()
    run = spec(prepared, tmp_path / "second", optimizer=settings, optimizer_from=str(first_run.out))
    fit(run, carried)
    assert carried.start_state.keys() == final["state"].keys()
    for name, entry in final["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(carried.start_state[name][key], entry[key]), (name, key)
    # the hyper-parameters are this run's own: its schedule's LR, its betas and weight decay
    assert [g["weight_decay"] for g in carried.start_groups] == [0.05]
    lr = run.schedule.lr_at(0, run.steps, None)
    assert all(g["betas"] == (0.8, 0.9) and g["lr"] == lr for g in carried.start_groups)

    fresh = Recorder()
    fit(spec(prepared, tmp_path / "fresh", optimizer=settings), fresh)
    assert fresh.start_state == {}
    with pytest.raises(AssertionError):
        assert_same(run.out / "model", tmp_path / "fresh" / "model")  # the carried moments changed the updates


def test_a_resumed_carrying_run_keeps_its_own_state(first_run: RunSpec, prepared: Path, tmp_path: Path) -> None:
    reference = spec(prepared, tmp_path / "reference", optimizer_from=str(first_run.out))
    fit(reference)
    source = tmp_path / "source"
    shutil.copytree(first_run.out, source)
    run = spec(prepared, tmp_path / "killed", optimizer_from=str(source))
    with pytest.raises(Killed):
        fit(run, Recorder(kill_at=3))
    shutil.rmtree(source)  # resuming reads the run's own checkpoint (step 2), never the carried state
    recorder = Recorder()
    fit(run, recorder)
    steps = {name: float(state["step"]) for name, state in recorder.start_state.items()}
    assert steps and set(steps.values()) == {4 + 2}  # the first run's 4 steps and this one's 2
    assert_same(reference.out / "model", run.out / "model")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": {"no_decay": ["norms"]}}, "does not match this model's parameter groups"),
        ({"optimizer": ADEMAMIX}, "another optimizer type"),
        ({"optimizer": MUON}, "does not match this model's parameter groups"),
        (
            {
                "init": {
                    "family": "llama",
                    "dims": {**DIMS, "num_hidden_layers": 3},
                    "vocab_size": 512,
                    "max_position_embeddings": 64,
                }
            },
            "does not match this model's parameter groups",
        ),
    ],
    ids=["no-decay-groups", "ademamix", "muon", "deeper-model"],
)
def test_optimizer_from_that_does_not_fit(
    first_run: RunSpec, prepared: Path, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    run = spec(prepared, tmp_path / "out", optimizer_from=str(first_run.out), **changes)
    with pytest.raises(MidtrainError) as caught:
        fit(run)
    text = str(caught.value)
    assert message in text and "optimizer_from" in text and str(first_run.out) in text, text


def test_optimizer_from_of_a_missing_or_unfinished_run(first_run: RunSpec, prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(MidtrainError, match="optimizer_from: run directory not found"):
        fit(spec(prepared, tmp_path / "a", optimizer_from=str(tmp_path / "nowhere")))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(first_run.out, unfinished)
    (unfinished / "summary.json").unlink()
    with pytest.raises(MidtrainError, match="has not finished"):
        fit(spec(prepared, tmp_path / "b", optimizer_from=str(unfinished)))
    (unfinished / "summary.json").write_text((first_run.out / "summary.json").read_text())
    shutil.rmtree(unfinished / "checkpoints" / "step-0000004")
    with pytest.raises(MidtrainError, match="final checkpoint.*is missing"):
        fit(spec(prepared, tmp_path / "c", optimizer_from=str(unfinished)))


# ---- save_at ----


def test_save_at_snapshots_survive_pruning_and_resume(prepared: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    every = spec(prepared, tmp_path / "every", checkpoint_every=1, keep_last=10)
    fit(every)
    run = spec(prepared, tmp_path / "run", save_at=[2, 5], checkpoint_every=4, keep_last=1)
    with pytest.raises(Killed):
        fit(run, Recorder(kill_at=5))  # after the snapshot of step 5; the last checkpoint is step 4
    snapshot = run.out / "at-step-5" / "model" / "model.safetensors"
    before = os.stat(snapshot)
    summary = fit(run)
    assert summary["resumed"] is True
    after = os.stat(snapshot)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    for step in (2, 5):
        model = run.out / f"at-step-{step}" / "model"
        assert_same(every.out / "checkpoints" / f"step-{step:07d}", model)  # the weights after that step
        assert json.loads((model / "midtrain.json").read_text())["steps"] == step
        assert AutoModelForCausalLM.from_pretrained(model).config.num_hidden_layers == 2
    assert [p.name for p in (run.out / "checkpoints").iterdir()] == ["step-0000006"]
    assert_same(every.out / "model", run.out / "model")  # snapshots do not change the run
    shutil.rmtree(run.out / "at-step-2")
    with pytest.warns(UserWarning, match=r"snapshots of steps \[2\] .* are missing"):
        fit(run)


# ---- Muon and AdEMAMix ----


def test_muon_groups_and_rms_matching(prepared: Path, tmp_path: Path) -> None:
    import torch

    from midtrain.schema.stage import Optimizer
    from midtrain.train.model import load_model
    from midtrain.train.optim import MuonAdamW, build_optimizer, set_lr

    model = load_model(spec(prepared, tmp_path))
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, Optimizer.model_validate(MUON), lr=0.01)
    assert isinstance(optimizer, MuonAdamW)
    muon, adamw = optimizer.parts
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    matrices = [names[id(p)] for p in muon.param_groups[0]["params"]]
    assert matrices and all(("proj" in n) and "embed" not in n and "lm_head" not in n for n in matrices)
    rest = [names[id(p)] for g in adamw.param_groups for p in g["params"]]
    assert "model.embed_tokens.weight" in rest and "lm_head.weight" in rest and any("norm" in n for n in rest)
    assert len(matrices) + len(rest) == len(names)

    class Layer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(48, 16, bias=False)
            self.proj.weight.data.copy_(torch.linspace(-1, 1, 48 * 16).reshape(16, 48))

        def get_output_embeddings(self) -> None:
            return None

    def one_step(rms: float, weight_decay: float, grad: float) -> torch.Tensor:
        layer = Layer()
        settings = Optimizer.model_validate({"type": "muon", "muon": {"rms_match": rms}, "weight_decay": weight_decay})
        built = build_optimizer(layer, settings, lr=0.5)
        set_lr(built, 0.01)  # the schedule's LR, as the loop sets it each step
        before = layer.proj.weight.detach().clone()
        layer.proj.weight.grad = torch.randn(16, 48, generator=torch.Generator().manual_seed(0)) * grad
        built.step()
        return layer.proj.weight.detach() - before

    # decoupled weight decay is LR × weight decay whatever the RMS target; the update scales with it
    for rms in (0.2, 0.5):
        decay = one_step(rms, 0.1, 0.0)
        assert torch.allclose(decay, -0.01 * 0.1 * torch.linspace(-1, 1, 48 * 16).reshape(16, 48), atol=1e-7)
    small, large = one_step(0.2, 0.0, 1.0), one_step(0.5, 0.0, 1.0)
    assert torch.allclose(large, small * 2.5, rtol=1e-4, atol=1e-7)
    # the RMS of the update is about rms_match × LR (Newton-Schulz leaves singular values near 1)
    rms = float(small.pow(2).mean().sqrt())
    assert 0.2 * 0.01 * 0.6 < rms < 0.2 * 0.01 * 1.3


@pytest.mark.parametrize("settings", [MUON, ADEMAMIX], ids=["muon", "ademamix"])
def test_other_optimizers_train_and_resume_exactly(prepared: Path, tmp_path: Path, settings: dict[str, Any]) -> None:
    schedule = {"type": "cosine", "peak_lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 2}
    options = {"steps": 10, "checkpoint_every": 3, "optimizer": settings, "schedule": schedule}
    reference = spec(prepared, tmp_path / "reference", **options)
    fit(reference)
    values = losses(reference.out)
    assert len(values) == 10 and values[-1] < values[0] - 0.5, values
    run = spec(prepared, tmp_path / "killed", **options)
    killed_and_resumed(run, 8)
    assert_same(reference.out / "model", run.out / "model")
    assert losses(run.out) == values


def test_ademamix_matches_the_paper() -> None:
    import math

    import torch

    from midtrain.train.ademamix import AdEMAMix

    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    optimizer = AdEMAMix([{"params": [param], "weight_decay": 0.1}], lr=0.01, betas=(0.9, 0.99, 0.999), alpha=4.0)
    grads = [torch.tensor([0.3, -0.1, 0.2]), torch.tensor([-0.2, 0.4, 0.1])]
    theta, m1, m2, nu = param.detach().clone().double(), 0.0, 0.0, 0.0
    for t, grad in enumerate(grads, start=1):
        param.grad = grad
        optimizer.step()
        g = grad.double()
        m1, m2, nu = 0.9 * m1 + 0.1 * g, 0.999 * m2 + 0.001 * g, 0.99 * nu + 0.01 * g * g
        update = (m1 / (1 - 0.9**t) + 4.0 * m2) / ((nu / (1 - 0.99**t)).sqrt() + 1e-8) + 0.1 * theta
        theta = theta - 0.01 * update
    assert torch.allclose(param.detach().double(), theta, atol=1e-6)
    from midtrain.train.ademamix import _ramp_alpha, _ramp_beta3

    assert _ramp_alpha(2, 8.0, 4) == 4.0 and _ramp_alpha(4, 8.0, 4) == 8.0
    assert _ramp_beta3(0, 0.999, 0.9, 10) == pytest.approx(0.9) and _ramp_beta3(10, 0.999, 0.9, 10) == 0.999
    half = _ramp_beta3(5, 0.999, 0.9, 10)  # half-way, linear in f(beta) = ln 0.5 / ln beta - 1
    assert math.log(0.5) / math.log(half) - 1 == pytest.approx((5.579 + 691.8) / 2, rel=1e-3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"type": "adafactor"}, "does not run it"),
        ({"qk_clip": {"tau": 100.0}}, "QK-Clip"),
        ({"type": "ademamix"}, "needs its settings"),
    ],
)
def test_optimizers_the_trainer_does_not_run(
    prepared: Path, tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    from midtrain.schema.stage import Optimizer
    from midtrain.train.model import load_model
    from midtrain.train.optim import build_optimizer

    with pytest.raises(MidtrainError, match=message):
        build_optimizer(load_model(spec(prepared, tmp_path)), Optimizer.model_validate(settings), lr=0.01)
