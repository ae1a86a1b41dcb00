"""The run's progress (rank 0, unless disabled) through midtrain.progress: a Rich bar with the loss
and tokens/s on a terminal; otherwise a header line and a line every tenth of the steps (stdout)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from midtrain.progress import STEP_LINE, Reporter
from midtrain.train.callbacks.base import Callback

if TYPE_CHECKING:
    from midtrain.train.loop import StepResult, Trainer


class ProgressBar(Callback):
    def __init__(self) -> None:
        self.reporter: Reporter | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        name, total, start = trainer.spec.name, trainer.spec.steps, trainer.step
        header = f"{name}: {total} steps" + (f", resuming at step {start}" if start else "")
        self.reporter = Reporter(
            name,
            total,
            start=start,
            enabled=trainer.progress,
            line=STEP_LINE,
            every=max(1, total // 10),
            stream="stdout",
            header=header,
        )

    def on_step_end(self, trainer: Trainer, step: int, result: StepResult) -> None:
        if self.reporter is not None:  # made by on_fit_start
            tokens_per_s = result.tokens / max(result.seconds, 1e-9)
            self.reporter.update(step, f"loss {result.loss:.4f} · {tokens_per_s:,.0f} tok/s")

    def on_loop_end(self, trainer: Trainer) -> None:
        if self.reporter is not None:
            self.reporter.close()
            self.reporter = None
