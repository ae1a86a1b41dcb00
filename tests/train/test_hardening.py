"""Checkpoints and run specifications are never trusted: broken ones fall back or fail clearly."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from midtrain.errors import MidtrainError
from midtrain.train import checkpoint as ckpt
from midtrain.train.config import RunSpec

from .conftest import make_spec, weights

# One short run, copied by every test: checkpoints at steps 4 and 6 (keep_last 2), the final model.
STEPS, EVERY = 6, 2


@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from midtrain.train.loop import train

    out = tmp_path_factory.mktemp("trained") / "out"
    train(RunSpec.model_validate(make_spec(prepared, out, steps=STEPS, checkpoint_every=EVERY)), progress=False)
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-0000004", "step-0000006"]
    return out


@pytest.fixture
def run(trained: Path, prepared: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private copy of the trained run: (spec for it, its checkpoint directory)."""
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    (out / "spec.json").unlink()  # the copy lives elsewhere; its checkpoints are kept, not wiped
    spec = RunSpec.model_validate(make_spec(prepared, out, steps=STEPS, checkpoint_every=EVERY))
    return spec, out / "checkpoints"


def resume(spec: RunSpec) -> tuple[bool, int, list[str]]:
    """(resumed?, the step the trainer is at, warnings issued) of a fresh trainer's resume()."""
    from midtrain.train.loop import Trainer

    trainer = Trainer(spec, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = trainer.resume()
    return resumed, trainer.step, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "manifest.json").read_text())


def write_manifest(checkpoint: Path, data: Any) -> None:
    (checkpoint / "manifest.json").write_text(json.dumps(data))


def rewrite(checkpoint: Path, name: str, content: bytes) -> None:
    """Replace a file and record its new size and hash in the manifest: it verifies, whatever it holds."""
    (checkpoint / name).write_bytes(content)
    data = manifest(checkpoint)
    data["files"][name] = {"bytes": len(content), "sha256": sha(checkpoint / name)}
    write_manifest(checkpoint, data)


def edit_state(checkpoint: Path, **changes: Any) -> None:
    state = json.loads((checkpoint / "state.json").read_text())
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    rewrite(checkpoint, "state.json", json.dumps(state).encode())


def assert_fell_back(spec: RunSpec, problem: str) -> None:
    resumed, step, messages = resume(spec)
    assert resumed is True and step == 4, (step, messages)
    assert any("step-0000006" in m and problem in m for m in messages), messages


# ---- checkpoints: the newest is broken, the previous one is used ----


def test_unlisted_extra_file_falls_back(run) -> None:  # type: ignore[no-untyped-def]
    spec, checkpoints = run
    (checkpoints / "step-0000006" / "payload.py").write_text("print('hello')")
    assert "payload.py" in (ckpt.verify(checkpoints / "step-0000006") or "")
    assert_fell_back(spec, "holds files the manifest does not list: 'payload.py'")


def test_manifest_with_dotdot_path_falls_back(run) -> None:  # type: ignore[no-untyped-def]
    spec, checkpoints = run
    newest = checkpoints / "step-0000006"
    data = manifest(newest)
    data["files"]["../step-0000004/state.json"] = data["files"]["state.json"]
    write_manifest(newest, data)
    assert_fell_back(spec, "not a plain file name")


def test_manifest_missing_optimizer_falls_back(run) -> None:  # type: ignore[no-untyped-def]
    spec, checkpoints = run
    newest = checkpoints / "step-0000006"
    data = manifest(newest)
    del data["files"]["optimizer.pt"]
    write_manifest(newest, data)
    (newest / "optimizer.pt").unlink()  # gone from both: only the manifest's completeness catches it
    assert_fell_back(spec, "does not list optimizer.pt")


def test_state_without_rng_falls_back(run) -> None:  # type: ignore[no-untyped-def]
    spec, checkpoints = run
    edit_state(checkpoints / "step-0000006", rng=None)
    assert ckpt.verify(checkpoints / "step-0000006") is None  # intact files; only their content is wrong
    with pytest.raises(MidtrainError, match="rng"):
        ckpt.load(checkpoints / "step-0000006")
    assert_fell_back(spec, "field rng is not valid")


def test_state_with_bad_step_or_tokens_falls_back(run) -> None:  # type: ignore[no-untyped-def]
    spec, checkpoints = run
    edit_state(checkpoints / "step-0000006", tokens_seen=-5)
    assert_fell_back(spec, "tokens_seen")
    edit_state(checkpoints / "step-0000006", tokens_seen=0, step=4)
    assert_fell_back(spec, "field step is not valid")


def test_checkpoint_beyond_the_runs_steps_falls_back(run, prepared: Path) -> None:  # type: ignore[no-untyped-def]
    spec, _checkpoints = run
    shorter = RunSpec.model_validate(make_spec(prepared, spec.out, steps=5, checkpoint_every=EVERY))
    assert_fell_back(shorter, "beyond the end of this run")


def test_parameter_count_mismatch_falls_back(run) -> None:  # type: ignore[no-untyped-def]
    spec, checkpoints = run
    edit_state(checkpoints / "step-0000006", parameters=123)
    assert_fell_back(spec, "does not match this model")


def test_corrupted_optimizer_with_rewritten_hash_falls_back_and_stays_exact(run, trained: Path) -> None:  # type: ignore[no-untyped-def]
    from midtrain.train.loop import train

    spec, checkpoints = run
    rewrite(checkpoints / "step-0000006", "optimizer.pt", b"PK\x03\x04 not really a zip file" * 10)
    assert ckpt.verify(checkpoints / "step-0000006") is None
    assert_fell_back(spec, "optimizer.pt")
    shutil.rmtree(spec.out / "model")
    with pytest.warns(UserWarning, match="skipping checkpoint .*step-0000006.*optimizer.pt"):
        summary = train(spec, progress=False)
    assert summary["resumed"] is True and summary["steps"] == STEPS
    reference, resumed = weights(trained / "model"), weights(spec.out / "model")
    assert reference.keys() == resumed.keys()
    assert all(bool((reference[k] == resumed[k]).all()) for k in reference), "fallback resume is not bitwise exact"


def test_optimizer_state_of_another_shape_falls_back(run) -> None:  # type: ignore[no-untyped-def]
    import io

    import torch

    spec, checkpoints = run
    newest = checkpoints / "step-0000006"
    state = torch.load(newest / "optimizer.pt", weights_only=True)
    name = next(iter(state["state"]))
    state["state"][name]["exp_avg"] = torch.zeros(3, 3)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    rewrite(newest, "optimizer.pt", buffer.getvalue())
    assert_fell_back(spec, "has the wrong shape")


def test_no_usable_checkpoint_starts_fresh(run) -> None:  # type: ignore[no-untyped-def]
    spec, checkpoints = run
    for checkpoint in ckpt.list_checkpoints(checkpoints):
        edit_state(checkpoint, rng=None)
    resumed, step, messages = resume(spec)
    assert resumed is False and step == 0
    assert any("step-0000006" in m for m in messages) and any("step-0000004" in m for m in messages)
    assert any("starting from scratch" in m for m in messages), messages


def test_failed_apply_restores_the_initial_state(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A checkpoint that passes every check but fails half-way through being applied must not leave
    its weights behind: with no other usable checkpoint, the run starts from the initial weights."""
    import torch
    import torch.distributed.checkpoint.state_dict as state_dict

    from midtrain.train.loop import Trainer

    spec, _checkpoints = run
    fresh = Trainer(spec, progress=False)
    initial = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    initial_rng = torch.get_rng_state()
    real = state_dict.set_state_dict

    def half_applied(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # the model and optimizer now hold the checkpoint ...
        raise RuntimeError("simulated failure after loading")  # ... and then it fails

    monkeypatch.setattr(state_dict, "set_state_dict", half_applied)
    trainer = Trainer(spec, progress=False)
    with pytest.warns(UserWarning) as caught:
        assert trainer.resume() is False
    messages = [str(w.message) for w in caught]
    assert sum("simulated failure after loading" in m for m in messages) == 2, messages
    assert trainer.step == 0 and trainer.tokens_seen == 0 and not trainer.optimizer.state
    assert not trainer.averages.tensors
    now = trainer.model.state_dict()
    assert all(torch.equal(now[k], initial[k]) for k in initial), "weights of a failed checkpoint were left behind"
    assert torch.equal(torch.get_rng_state(), initial_rng)


# ---- verify() on manifests that are not what they claim ----


@pytest.mark.parametrize(
    "content, problem",
    [
        ("[]", "manifest is corrupt"),
        ('{"step": 6}', "manifest is corrupt"),
        ('{"step": 6, "files": ["model.safetensors"]}', "manifest is corrupt"),
        ('"just a string"', "manifest is corrupt"),
        ("{not json", "manifest is corrupt"),
        ("[" * 100_000, "manifest is corrupt"),
    ],
)
def test_manifest_that_is_not_an_object_is_corrupt(run, content: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    _, checkpoints = run
    (checkpoints / "step-0000006" / "manifest.json").write_text(content)
    result = ckpt.verify(checkpoints / "step-0000006")
    assert result is not None and problem in result


def test_manifest_entries_and_step_are_checked(run) -> None:  # type: ignore[no-untyped-def]
    _, checkpoints = run
    newest = checkpoints / "step-0000006"
    original = manifest(newest)
    assert ckpt.verify(newest) is None
    write_manifest(newest, {**original, "step": 4})
    assert "for step 4" in (ckpt.verify(newest) or "")
    write_manifest(newest, {**original, "files": {**original["files"], "/etc/passwd": original["files"]["state.json"]}})
    assert "not a plain file name" in (ckpt.verify(newest) or "")
    write_manifest(newest, {**original, "files": {**original["files"], "notes.txt": original["files"]["state.json"]}})
    assert "files a checkpoint does not have" in (ckpt.verify(newest) or "")
    write_manifest(newest, {**original, "files": {**original["files"], "state.json": {"bytes": "many", "sha256": 1}}})
    assert "entry for state.json" in (ckpt.verify(newest) or "")
    write_manifest(newest, original)
    assert ckpt.verify(newest) is None


# ---- run specifications ----

BAD_SPECS = [
    ({"streams": {"prose.train": math.nan, "code.train": 0.5, "math.train": 0.5}}, "streams"),
    ({"streams": {"prose.train": -0.2, "code.train": 0.6, "math.train": 0.6}}, "streams"),
    ({"streams": {"prose.train": math.inf, "code.train": 0.0, "math.train": 0.0}}, "streams"),
    ({"streams": {"prose.train": 0.0}}, "streams"),
    ({"streams": {"": 1.0}}, "streams"),
    ({"streams": {}}, "streams"),
    ({"threads": 0}, "threads"),
    ({"threads": 10**6}, "threads"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**40}, "seed"),
    ({"data_seed": -1}, "data_seed"),
    ({"global_batch": 10**9}, "global_batch"),
    ({"global_batch": 4, "micro_batch": 8}, "micro_batch"),
    ({"sequence_length": 2**25}, "sequence_length"),
    ({"global_batch": 1_048_576, "micro_batch": 4, "sequence_length": 4096}, "tokens per step"),
    ({"steps": 10**10}, "steps"),
    (
        {
            "schedule": {
                "type": "power",
                "a": math.inf,
                "b": -0.5,
                "max_lr": 0.01,
                "batch_size": 8,
                "tokens_per_step": 512,
            }
        },
        "schedule.a",
    ),
    ({"optimizer": {"grad_clip": math.inf}}, "optimizer.grad_clip"),
    ({"z_loss": math.nan}, "z_loss"),
    ({"max_epochs": {"prose.train": math.nan}}, "max_epochs"),
]


@pytest.mark.parametrize("overrides, field", BAD_SPECS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_SPECS)])
def test_bad_run_spec_values_are_validation_errors(
    prepared: Path, tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    good = make_spec(prepared, tmp_path / "out")
    RunSpec.model_validate(good)  # the baseline is valid: the override alone is what fails
    bad = {**good, **overrides}
    started = time.monotonic()
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(bad)
    assert field in str(info.value)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(bad))  # NaN / Infinity as Python's json writes them
    with pytest.raises(MidtrainError) as loaded:
        RunSpec.load(path)
    assert field.split(".")[0] in loaded.value.render()
    assert time.monotonic() - started < 5


def test_limits_agree_between_spec_and_sampler() -> None:
    from midtrain.data import mixture
    from midtrain.train import config

    for name in ("MAX_GLOBAL_BATCH", "MAX_SEQUENCE_LENGTH", "MAX_TOKENS_PER_STEP"):
        assert getattr(config, name) == getattr(mixture, name), name


# ---- the mixture sampler checks sizes before allocating ----

STREAMS = {"a": 100_000, "b": 50_000}


@pytest.mark.parametrize(
    "changes, found",
    [
        ({"global_batch": 10**9}, "1000000000"),
        ({"global_batch": 0}, "0"),
        ({"sequence_length": 2**30}, str(2**30)),
        ({"global_batch": 1_000_000, "sequence_length": 100_000}, str(10**11)),
        ({"stream_tokens": {"a": 10**18, "b": 50_000}}, "sequences"),
        ({"stream_tokens": {"a": -5, "b": 50_000}}, "-5"),
        ({"shares": {"a": math.nan, "b": 0.5}}, "nan"),
        ({"shares": {"a": 0.0, "b": 0.0}}, "0.0"),
        ({"seed": -1}, "-1"),
    ],
)
def test_sampler_rejects_sizes_it_would_choke_on(changes: dict[str, Any], found: str) -> None:
    from midtrain.data.mixture import MixtureSampler

    args: dict[str, Any] = {
        "stream_tokens": STREAMS,
        "shares": {"a": 0.5, "b": 0.5},
        "sequence_length": 64,
        "global_batch": 8,
    }
    MixtureSampler(**args).batch(0)  # the baseline works
    started = time.monotonic()
    with pytest.raises(MidtrainError) as info:
        MixtureSampler(**{**args, **changes}).batch(0)
    problem = info.value.problems[0]
    assert problem.expected and found in (problem.found or "") + problem.message
    assert time.monotonic() - started < 2


def test_sampler_rejects_bad_positions_and_ranks() -> None:
    from midtrain.data.mixture import MixtureSampler

    sampler = MixtureSampler(STREAMS, {"a": 0.5, "b": 0.5}, sequence_length=64, global_batch=8)
    with pytest.raises(MidtrainError, match="positions out of range"):
        sampler.positions(0, 10**9)
    with pytest.raises(MidtrainError, match="rank out of range"):
        sampler.batch(0, rank=2, world_size=2)
    with pytest.raises(MidtrainError, match="step out of range"):
        sampler.batch(-1)


def test_checkpoints_are_ordered_by_step_and_newer_rejected_ones_do_not_evict_good_ones(tmp_path: Path) -> None:
    import torch

    directory = tmp_path / "checkpoints"
    for name in ("step-9999999", "step-10000000", "step-00000001", "step-12", "notes"):
        (directory / name).mkdir(parents=True)
    assert [p.name for p in ckpt.list_checkpoints(directory)] == ["step-9999999", "step-10000000"]
    shutil.rmtree(directory)

    def save(step: int) -> None:
        ckpt.save(
            directory,
            step,
            {"w": torch.zeros(2)},
            {"state": {}, "param_groups": []},
            {"tokens_seen": 0, "rng": ckpt.rng_state()},
            keep_last=2,
        )

    save(99)  # a newer checkpoint the run fell back from (say it was rejected)
    for step in (2, 4, 6):
        save(step)
    assert [p.name for p in ckpt.list_checkpoints(directory)] == ["step-0000004", "step-0000006", "step-0000099"]
    assert all(ckpt.verify(p) is None for p in ckpt.list_checkpoints(directory))
