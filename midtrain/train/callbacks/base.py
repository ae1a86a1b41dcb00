"""The callback interface of the trainer (compare OLMo-core's trainer callbacks).

Everything the loop does besides the optimizer step (averaging weights, logging, the progress bar,
measuring throughput, or whatever a user attaches) is a `Callback`. The trainer calls each hook on
every callback, in order, on every rank; a callback that should act once checks
`trainer.dist.main` itself. Every hook is optional.

A stateful callback returns its state from `on_checkpoint_save` and gets it back, when a run
resumes, through `on_checkpoint_load`. Where that state lives in a checkpoint:

- `checkpoint_file` set (one of `checkpoint.OPTIONAL_FILES`, e.g. "averages.safetensors"): the
  state is named tensors, saved in that file and covered by the manifest; in a distributed run's
  checkpoint (midtrain/train/dcp.py) they are sharded state under the file's stem (`averages.*`),
  read back into `checkpoint_template`'s tensors;
- otherwise it is a JSON value, saved in state.json under "callbacks" → `name`.

Nothing read back is trusted: `check_state` sees a checkpoint's state before anything is applied
and raises (a MidtrainError naming `file`) when it does not fit this run; the trainer then falls
back to the previous checkpoint, as for any other defect.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midtrain.train.loop import StepResult, Trainer


class Callback:
    checkpoint_file: str | None = None

    @property
    def name(self) -> str:
        """The key of this callback's JSON state in state.json (the class name unless overridden)."""
        return type(self).__name__

    def on_attach(self, trainer: Trainer) -> None:
        """Once, when the trainer is built: model, optimizer and data exist, nothing is resumed yet."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """After resuming (trainer.step is the step training continues from), before the first step."""

    def on_step_start(self, trainer: Trainer, step: int) -> None:
        """Before optimizer step `step` (0-based: the number of steps completed so far)."""

    def on_step_end(self, trainer: Trainer, step: int, result: StepResult) -> None:
        """After an optimizer step; `step` is the number of steps now completed (1 after the first).
        trainer.step and trainer.tokens_seen are already advanced. Called for every step."""

    def on_checkpoint_save(self, trainer: Trainer) -> Any:
        """The state to include in the checkpoint being written, or None. Called on every rank."""
        return None

    def checkpoint_template(self, trainer: Trainer, step: int) -> dict[str, Any] | None:
        """A callback with `checkpoint_file`: the tensors its state holds at `step`, allocated as they
        live on this rank (sharded like the parameters under FSDP2), for a distributed checkpoint
        (midtrain/train/dcp.py) to be read into; None or {} when it keeps none by then."""
        return None

    def check_state(self, trainer: Trainer, state: Any, step: int, file: Path) -> None:
        """Raise when `state` (None if the checkpoint holds none), saved at `step`, does not fit this run."""

    def on_checkpoint_load(self, trainer: Trainer, state: Any) -> None:
        """Replace this callback's state by a checkpoint's (checked by `check_state`); None means the
        initial state (a run starting afresh, or undoing a checkpoint that failed half-way through)."""

    def on_loop_end(self, trainer: Trainer) -> None:
        """When the loop stops, whether it finished or raised (close bars and files here)."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After the last checkpoint and the final model are saved: add to `summary` (written to
        summary.json afterwards) or write further outputs."""
