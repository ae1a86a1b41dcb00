"""The trainer on tiny models: HF-compatible outputs, families, optimizer groups, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from midtrain.errors import MidtrainError
from midtrain.train.config import RunSpec
from midtrain.train.loop import NonFiniteLoss, Trainer, train

from .conftest import DIMS, losses


def run(path: Path, **kw):  # type: ignore[no-untyped-def]
    return train(RunSpec.load(path), progress=False, **kw)


@pytest.mark.parametrize("family", ["llama", "qwen3", "olmo2"])
def test_families_train_and_save_loadable_hf_models(spec_factory, family: str) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = spec_factory(
        family, init={"family": family, "dims": DIMS, "vocab_size": 512, "max_position_embeddings": 64}, steps=6
    )
    summary = run(path)
    assert summary["steps"] == 6 and summary["final_loss"] < 6.3  # ln(512) = 6.24 at random init
    out = Path(json.loads(path.read_text())["out"]) / "model"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__.lower().startswith(family.replace("2", "").replace("3", ""))
    ids = tokenizer("Problem: Ada has", return_tensors="pt")["input_ids"]
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5
    assert (out / "generation_config.json").exists() and (out / "tokenizer.json").exists()
    assert torch.isfinite(next(model.parameters())).all()


def test_loss_decreases_and_metrics_are_logged(spec_factory) -> None:  # type: ignore[no-untyped-def]
    path = spec_factory(steps=16)
    run(path)
    out = Path(json.loads(path.read_text())["out"])
    values = losses(out)
    assert len(values) == 16 and values[-1] < values[0] - 0.5
    for metric in ("lr", "grad_norm", "tokens_seen", "tokens_per_s"):
        assert (out / "dvclive" / "plots" / "metrics" / "train" / f"{metric}.tsv").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens_seen"] == 16 * 8 * 64


def test_no_decay_groups(prepared: Path, tmp_path: Path) -> None:
    from midtrain.schema.stage import Optimizer
    from midtrain.train.model import load_model
    from midtrain.train.optim import parameter_groups

    from .conftest import make_spec

    spec = RunSpec.model_validate(make_spec(prepared, tmp_path))
    model = load_model(spec)
    groups = parameter_groups(model, Optimizer(no_decay=["embeddings", "norms", "biases"], weight_decay=0.1))
    decayed = {id(p) for p in groups[0]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("norm" not in names[i] and "embed" not in names[i] and "lm_head" not in names[i] for i in decayed)
    assert groups[1]["weight_decay"] == 0.0 and len(groups[0]["params"]) + len(groups[1]["params"]) == len(
        list(model.parameters())
    )


def test_z_loss_changes_the_update(spec_factory) -> None:  # type: ignore[no-untyped-def]
    from .conftest import weights

    plain = spec_factory("plain", steps=2)
    with_z = spec_factory("z", steps=2, z_loss=1e-2)
    run(plain), run(with_z)
    a = weights(Path(json.loads(plain.read_text())["out"]) / "model")
    b = weights(Path(json.loads(with_z.read_text())["out"]) / "model")
    assert any(not (a[k] == b[k]).all() for k in a)


def test_ema_and_polyak_models_are_written(spec_factory) -> None:  # type: ignore[no-untyped-def]
    path = spec_factory(steps=8, ema_decay=0.9, polyak={"checkpoints": 2})
    run(path)
    out = Path(json.loads(path.read_text())["out"])
    assert (out / "model-ema" / "model.safetensors").exists() and (out / "model-polyak" / "model.safetensors").exists()


def test_non_writable_output(spec_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() == 0:
        blocker = tmp_path / "file-not-dir"
        blocker.write_text("x")
        path = spec_factory(out=str(blocker / "out"))
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        path = spec_factory(out=str(locked / "out"))
    with pytest.raises(MidtrainError, match="not writable"):
        run(path)


def test_missing_init_model(spec_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MidtrainError, match="model directory not found"):
        run(spec_factory(init={"path": str(tmp_path / "nope")}))
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(MidtrainError, match="no config.json"):
        run(spec_factory(init={"path": str(tmp_path / "empty-model")}))


def test_vocab_mismatch(spec_factory) -> None:  # type: ignore[no-untyped-def]
    path = spec_factory(init={"family": "llama", "dims": DIMS, "vocab_size": 256, "max_position_embeddings": 64})
    with pytest.raises(MidtrainError, match="vocabularies do not match") as info:
        run(path)
    assert "512 tokens" in info.value.render()


def test_config_that_cannot_fit(spec_factory) -> None:  # type: ignore[no-untyped-def]
    huge = {
        "hidden_size": 16384,
        "num_hidden_layers": 64,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 53248,
    }
    path = spec_factory(init={"family": "llama", "dims": huge, "vocab_size": 512, "max_position_embeddings": 64})
    with pytest.raises(MidtrainError, match="needs about .* GiB"):
        run(path)


def test_mismatched_checkpoint(spec_factory) -> None:  # type: ignore[no-untyped-def]
    path = spec_factory(steps=4)
    run(path)
    spec = json.loads(path.read_text())
    (Path(spec["out"]) / "spec.json").unlink()  # checkpoints from elsewhere: no record of their settings
    spec["init"]["dims"] = {**DIMS, "intermediate_size": 256}
    spec["steps"] = 8
    path.write_text(json.dumps(spec))
    with pytest.warns(UserWarning, match="checkpoint does not match this model"):
        summary = run(path)
    assert summary["resumed"] is False and summary["steps"] == 8  # a checkpoint of another model is skipped, not used


def test_missing_streams(spec_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MidtrainError, match="does not have: web.train"):
        run(spec_factory(streams={"web.train": 1.0}))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(spec_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    from midtrain.train import checkpoint as ckpt
    from midtrain.train import loop

    path = spec_factory(steps=12, checkpoint_every=4)
    real = loop._loss_fn
    calls = {"n": 0}

    def poisoned(logits, targets, z_loss):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        ce, z = real(logits, targets, z_loss)
        return (
            ce * torch.tensor(float("nan")) if calls["n"] > 2 * 6 else ce
        ), z  # NaN from step 6 on (2 micro-batches/step)

    monkeypatch.setattr(loop, "_loss_fn", poisoned)
    with pytest.raises(NonFiniteLoss, match="loss became nan at step 6") as info:
        run(path)
    assert "last good checkpoint" in info.value.render()
    out = Path(json.loads(path.read_text())["out"])
    good = ckpt.latest_good(out / "checkpoints")
    assert good is not None and good.name == "step-0000004" and ckpt.verify(good) is None
    assert not (out / "model").exists()


def test_bad_spec_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(MidtrainError) as info:
        RunSpec.load(bad)
    assert "required field is missing" in info.value.render()
    (tmp_path / "broken.json").write_text("{oops")
    with pytest.raises(MidtrainError, match="not valid JSON"):
        RunSpec.load(tmp_path / "broken.json")


def test_trainer_cli_reports_errors_without_traceback(spec_factory) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from midtrain.cli import app

    path = spec_factory(streams={"web.train": 1.0})
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and "does not have: web.train" in result.output
    assert Trainer  # imported for type reference


def test_gpu_options_run_on_cpu(spec_factory) -> None:  # type: ignore[no-untyped-def]
    """bf16 autocast, activation checkpointing and torch.compile are GPU options; their code paths run here too."""
    path = spec_factory("options", steps=3, precision="bf16", activation_checkpointing=True, compile=True)
    summary = run(path)
    assert summary["steps"] == 3 and summary["final_loss"] < 6.5


def test_metrics_rows_are_on_disk_at_every_checkpoint_and_a_writer_error_stops_the_run(spec_factory) -> None:  # type: ignore[no-untyped-def]
    """dvclive's rows are written by a thread of their own; each checkpoint waits for them, and a
    failed write (here: its metrics folder replaced by a file) is raised in the training thread."""
    import shutil

    from midtrain.train.callbacks import Callback

    seen: list[tuple[int, int]] = []

    class AtCheckpoint(Callback):
        def on_checkpoint_save(self, trainer: Trainer) -> None:
            seen.append((trainer.step, len(losses(trainer.out))))

    path = spec_factory(steps=9, checkpoint_every=4)
    run(path, callbacks=[AtCheckpoint()])
    # the built-in callbacks are called first, so dvclive has flushed before this one looks
    assert seen == [(4, 4), (8, 8), (9, 9)]

    class BreakMetrics(Callback):
        def on_step_end(self, trainer: Trainer, step: int, result: object) -> None:
            if step == 2:
                folder = trainer.out / "dvclive" / "plots" / "metrics" / "train"
                shutil.rmtree(folder)
                folder.write_text("not a folder")

    broken = spec_factory("broken", steps=12, checkpoint_every=100)
    with pytest.raises(OSError):
        run(broken, callbacks=[BreakMetrics()])


def test_a_run_whose_starting_model_changed_under_the_same_path_starts_afresh(spec_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A base retrained into the same directory (what a pipeline rerun does) must not let a finished
    or half-finished run resume its old checkpoints: same spec, other starting weights, fresh start."""
    import shutil

    base = Path(json.loads(spec_factory("base", steps=2).read_text())["out"])
    run(spec_factory("base", steps=2))
    first_base = tmp_path / "first-base"
    shutil.copytree(base / "model", first_base)
    child = spec_factory("child", steps=4, init={"path": str(base / "model")})
    assert run(child)["resumed"] is False
    assert run(child)["resumed"] is True  # nothing changed: the finished run is resumed
    run(spec_factory("base", steps=2, seed=7))  # another base, written where the first one was
    assert run(child)["resumed"] is False
    shutil.rmtree(base / "model")
    shutil.copytree(first_base, base / "model")  # the data are part of it too: same base, other data manifest
    run(child)
    manifest = Path(json.loads(child.read_text())["data"]) / "shards" / "manifest.json"
    original = manifest.read_text()
    try:
        manifest.write_text(original.replace('"documents"', '"documents" ', 1))
        assert run(child)["resumed"] is False
    finally:
        manifest.write_text(original)
