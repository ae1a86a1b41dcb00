"""Trainer callbacks: custom ones see every step and keep state across a resume; the built-in
averaging, throughput and progress callbacks; one progress reporter for every task."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from midtrain.errors import MidtrainError
from midtrain.train.callbacks import Averaging, Callback, DVCLive, ProgressBar, Throughput, with_defaults
from midtrain.train.config import RunSpec

from .conftest import losses, make_spec, weights

STEPS, EVERY = 8, 4


class Stop(Exception):
    """Raised by `Recorder` to interrupt a run, as a kill would (the checkpoint at step 4 stays)."""


class Recorder(Callback):
    """Records every hook; keeps a JSON state (steps seen) in checkpoints; can stop the run."""

    def __init__(self, stop_at: int | None = None, reject_step: int | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.seen = 0  # steps this run has completed, restored from checkpoints
        self.stop_at, self.reject_step = stop_at, reject_step
        self.loaded: list[Any] = []

    def on_attach(self, trainer) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("attach",))

    def on_fit_start(self, trainer) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("fit_start", trainer.step))

    def on_step_start(self, trainer, step: int) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("step_start", step))

    def on_step_end(self, trainer, step: int, result) -> None:  # type: ignore[no-untyped-def]
        assert trainer.step == step and trainer.tokens_seen == step * 8 * 64
        self.events.append(("step_end", step, result.loss))
        self.seen += 1
        if step == self.stop_at:
            raise Stop

    def on_checkpoint_save(self, trainer) -> dict[str, int]:  # type: ignore[no-untyped-def]
        self.events.append(("save", trainer.step))
        return {"seen": self.seen}

    def check_state(self, trainer, state, step: int, file: Path) -> None:  # type: ignore[no-untyped-def]
        if step == self.reject_step:
            raise MidtrainError.single("recorder state rejected", file=file)
        if not (isinstance(state, dict) and state.get("seen") == step):
            raise MidtrainError.single("recorder state does not match", file=file, found=str(state))

    def on_checkpoint_load(self, trainer, state) -> None:  # type: ignore[no-untyped-def]
        self.loaded.append(state)
        self.seen = state["seen"] if state else 0

    def on_loop_end(self, trainer) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("loop_end", trainer.step))

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("fit_end", summary["steps"]))
        summary["recorded_steps"] = self.seen


def _spec(prepared: Path, out: Path, **overrides: Any) -> RunSpec:
    settings = {"steps": STEPS, "checkpoint_every": EVERY, "ema_decay": 0.9, "polyak": {"checkpoints": 2}, **overrides}
    return RunSpec.model_validate(make_spec(prepared, out, **settings))


@pytest.fixture(scope="module")
def reference(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorder, dict[str, Any]]:
    """An uninterrupted run with a Recorder attached: (its output directory, the recorder, the summary)."""
    from midtrain.train.loop import train

    out = tmp_path_factory.mktemp("reference") / "out"
    recorder = Recorder()
    summary = train(_spec(prepared, out), progress=False, callbacks=[recorder])
    return out, recorder, summary


def test_custom_callback_sees_every_step(reference) -> None:  # type: ignore[no-untyped-def]
    out, recorder, summary = reference
    events = recorder.events
    assert events[0] == ("attach",) and events[1] == ("fit_start", 0)
    assert [e[1] for e in events if e[0] == "step_start"] == list(range(STEPS))
    assert [e[1] for e in events if e[0] == "step_end"] == list(range(1, STEPS + 1))
    assert [e[2] for e in events if e[0] == "step_end"] == pytest.approx(losses(out))
    assert [e[1] for e in events if e[0] == "save"] == [4, 8]  # the periodic checkpoint and the final one
    assert events[-3:] == [
        ("loop_end", STEPS),
        ("save", STEPS),
        ("fit_end", STEPS),
    ]  # the loop, the last checkpoint, the end
    # the summary callbacks add to is the one written; the JSON state went into state.json
    assert summary["recorded_steps"] == STEPS == json.loads((out / "summary.json").read_text())["recorded_steps"]
    state = json.loads((out / "checkpoints" / "step-0000008" / "state.json").read_text())
    assert state["callbacks"] == {"Recorder": {"seen": STEPS}}


def test_states_round_trip_through_a_checkpoint(reference, prepared: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Interrupted at step 6 and resumed from the checkpoint at step 4: the averaging and custom
    callbacks get back exactly what they saved, and the run ends as the uninterrupted one did."""
    import torch
    from safetensors.torch import load_file

    from midtrain.train.loop import Trainer

    reference_out, _, reference_summary = reference
    out = tmp_path / "out"
    first = Trainer(_spec(prepared, out), progress=False, callbacks=[Recorder(stop_at=6)])
    with pytest.raises(Stop):
        first.fit()
    saved = load_file(str(out / "checkpoints" / "step-0000004" / "averages.safetensors"))
    assert int(saved["_polyak_count"][0]) == 1 and any(k.startswith("ema.") for k in saved)
    assert any(k.startswith("polyak.") for k in saved)

    recorder = Recorder()
    second = Trainer(_spec(prepared, out), progress=False, callbacks=[recorder])
    assert second.resume() is True and second.step == 4
    assert recorder.loaded == [{"seen": 4}] and recorder.seen == 4
    averaging = second.averages
    assert averaging.count == 1 and averaging.tensors.keys() == {k for k in saved if k != "_polyak_count"}
    assert all(torch.equal(averaging.tensors[k], saved[k]) for k in averaging.tensors)
    again = averaging.on_checkpoint_save(second)
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)

    summary = second.fit(resume=False)  # continues from step 4
    assert summary["steps"] == STEPS and summary["recorded_steps"] == STEPS
    assert [e[1] for e in recorder.events if e[0] == "step_end"] == [5, 6, 7, 8]
    for name in ("model", "model-ema", "model-polyak"):
        a, b = weights(reference_out / name), weights(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert losses(out) == losses(reference_out)
    assert reference_summary["final_loss"] == summary["final_loss"]


def test_a_callback_rejecting_its_state_falls_back(reference, prepared: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from midtrain.train.loop import Trainer

    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    (out / "spec.json").unlink()  # the copy lives elsewhere; its checkpoints are kept, not wiped
    trainer = Trainer(_spec(prepared, out), progress=False, callbacks=[Recorder(reject_step=8)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert trainer.resume() is True
    assert trainer.step == 4
    messages = [str(w.message) for w in caught]
    assert any("step-0000008" in m and "recorder state rejected" in m and "state.json" in m for m in messages), messages


def test_averaging_rejects_averages_of_other_settings(reference, prepared: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from midtrain.train.loop import Trainer

    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    (out / "spec.json").unlink()  # keep the checkpoints although the settings differ
    trainer = Trainer(_spec(prepared, out, ema_decay=None), progress=False)
    with pytest.warns(UserWarning, match="averages .EMA / Polyak. do not match this run"):
        assert trainer.resume() is False
    assert trainer.step == 0 and not trainer.averages.tensors


def test_throughput_and_mfu_in_the_summary(prepared: Path, tmp_path: Path) -> None:
    from midtrain.train.callbacks.throughput import measure_peak_flops
    from midtrain.train.loop import Trainer

    spec = _spec(prepared, tmp_path / "out", steps=4, ema_decay=None, polyak=None)
    trainer = Trainer(spec, progress=False, callbacks=[Throughput(peak_flops=1e12)])
    meters = [c for c in trainer.callbacks if isinstance(c, Throughput)]
    assert len(meters) == 1 and trainer.callbacks[-1] is meters[0]  # replaces the built-in one, runs last
    summary = trainer.fit()
    meter = meters[0]
    assert meter.steps == 3 and meter.tokens == 3 * 8 * 64  # the first iteration is not counted
    assert summary["tokens_per_s"] == pytest.approx(meter.tokens / meter.seconds) and summary["tokens_per_s"] > 0
    assert summary["mfu"] == pytest.approx(6 * trainer.parameters * summary["tokens_per_s"] / 1e12)
    written = json.loads((spec.out / "summary.json").read_text())
    assert list(written) == [
        "run",
        "steps",
        "tokens_seen",
        "parameters",
        "final_loss",
        "tokens_per_s",
        "resumed",
        "strategy",
        "world_size",
        "mfu",
    ]
    import torch

    assert measure_peak_flops(torch.device("cpu"), size=128, repeats=2) > 0


def test_no_mfu_without_a_peak(reference) -> None:  # type: ignore[no-untyped-def]
    _, _, summary = reference
    assert "mfu" not in summary and summary["tokens_per_s"] > 0


def test_progress_lines_on_a_pipe(prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from midtrain.train.loop import Trainer

    spec = _spec(prepared, tmp_path / "out", steps=4, checkpoint_every=2, ema_decay=None, polyak=None)
    with pytest.raises(Stop):
        Trainer(spec, progress=True, callbacks=[Recorder(stop_at=3)]).fit()
    Trainer(spec, progress=True).fit()
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("test/run-0: step ")]
    assert "auto: see" in lines[0]  # the resolved settings come first (train/auto.py)
    assert lines[1] == "test/run-0: 4 steps" and "test/run-0: 4 steps, resuming at step 2" in lines
    assert [line.split()[2] for line in steps] == ["1/4", "2/4", "3/4", "3/4", "4/4"]
    assert all("loss " in line and " tok/s · eta " in line for line in steps)


def test_progress_bar_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from midtrain.progress import progress_bar

    with progress_bar("work", 10, unit=" items") as advance:
        for _ in range(10):
            advance(1)
    err = capsys.readouterr().err.splitlines()
    assert [line.split("(")[0] for line in err[:-1]] == [f"work: {p:3d}% " for p in range(10, 101, 10)]
    assert err[0].startswith("work:  10% (1/10 items, eta ") and err[-1].startswith("work: done in ")
    with pytest.raises(RuntimeError), progress_bar("broken", 4) as advance:
        advance(1)
        raise RuntimeError
    assert "done in" not in capsys.readouterr().err  # no footer when the work failed
    with progress_bar("off", 4, enabled=False) as advance:
        advance(4)
    assert capsys.readouterr().err == ""


def test_with_defaults_order_and_checks() -> None:
    custom = Recorder()
    callbacks = with_defaults([custom])
    assert [type(c) for c in callbacks] == [Averaging, DVCLive, ProgressBar, Recorder, Throughput]
    bar = ProgressBar()
    assert with_defaults([bar])[2] is bar

    class Stray(Callback):
        checkpoint_file = "extra.safetensors"

    with pytest.raises(ValueError, match="checkpoint files"):
        with_defaults([Stray()])
