"""EMA and/or Polyak averaging of the weights: a stateful callback, checkpointed in averages.safetensors.

EMA keeps `ema.<param>` (fp32), updated after every step; Polyak keeps `polyak.<param>`, the sum
of snapshots taken at `polyak.checkpoints` evenly spaced steps to the end of the stage, and their
count (`_polyak_count`). At the end, `model-ema/` and `model-polyak/` are saved beside `model/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError
from midtrain.train.callbacks.base import Callback
from midtrain.train.checkpoint import AVERAGES

if TYPE_CHECKING:
    import torch

    from midtrain.train.loop import StepResult, Trainer


def _full(param: torch.Tensor) -> torch.Tensor:
    """The full tensor of a (possibly FSDP-sharded) parameter (a collective under FSDP)."""
    return param.full_tensor() if hasattr(param, "full_tensor") else param


class Averaging(Callback):
    checkpoint_file = AVERAGES

    def __init__(self) -> None:
        self.ema_decay: float | None = None
        self.snapshot_steps: set[int] = set()
        self.tensors: dict[str, torch.Tensor] = {}
        self.count = 0
        self.params: dict[str, torch.nn.Parameter] = {}

    def on_attach(self, trainer: Trainer) -> None:
        from midtrain.train.model import named_parameters

        spec = trainer.spec
        self.ema_decay = spec.ema_decay
        if spec.polyak is not None:
            k = spec.polyak.checkpoints
            self.snapshot_steps = {round(spec.steps * (i + 1) / k) for i in range(k)}
        self.params = dict(named_parameters(trainer.model))

    def on_step_end(self, trainer: Trainer, step: int, result: StepResult) -> None:
        import torch

        with torch.no_grad():
            if self.ema_decay is not None:
                for name, param in self.params.items():
                    full = _full(param)
                    key = f"ema.{name}"
                    if key not in self.tensors:
                        self.tensors[key] = full.detach().clone().float()
                    else:
                        self.tensors[key].mul_(self.ema_decay).add_(full.float(), alpha=1 - self.ema_decay)
            if step in self.snapshot_steps:
                for name, param in self.params.items():
                    key = f"polyak.{name}"
                    full = _full(param).detach().float()
                    self.tensors[key] = full.clone() if key not in self.tensors else self.tensors[key].add_(full)
                self.count += 1

    def on_checkpoint_save(self, trainer: Trainer) -> dict[str, Any]:
        import torch

        return {**self.tensors, "_polyak_count": torch.tensor([self.count])} if self.tensors else {}

    def check_state(self, trainer: Trainer, state: dict[str, Any] | None, step: int, file: Path) -> None:
        """The tensors must be those this run keeps at `step`, of the model's shapes, and the count
        that of the Polyak snapshots taken by then."""
        from midtrain.train.resume import shape_summary

        shapes = {name: tuple(param.shape) for name, param in self.params.items()}
        tensors = dict(state or {})
        count = tensors.pop("_polyak_count", None)
        want_ema = self.ema_decay is not None and step > 0
        want_polyak = sum(1 for s in self.snapshot_steps if s <= step)
        found_count = int(count.reshape(-1)[0]) if count is not None and count.numel() == 1 else None
        expected = {f"ema.{n}": s for n, s in shapes.items()} if want_ema else {}
        expected.update({f"polyak.{n}": s for n, s in shapes.items()} if want_polyak else {})
        found = {name: tuple(t.shape) for name, t in tensors.items()}
        if found != expected or found_count != (want_polyak if expected else None):
            raise MidtrainError.single(
                "checkpoint averages (EMA / Polyak) do not match this run",
                file=file,
                expected=f"{shape_summary(expected, found)}; {want_polyak} Polyak snapshots",
                found=f"{shape_summary(found, expected)}; {found_count} Polyak snapshots",
            )

    def on_checkpoint_load(self, trainer: Trainer, state: dict[str, Any] | None) -> None:
        tensors = dict(state or {})
        count = tensors.pop("_polyak_count", None)
        self.count = int(count[0]) if count is not None else 0
        self.tensors = tensors

    def final(self) -> dict[str, dict[str, Any]]:
        """The averaged weights by kind ("ema", "polyak"), as they are at the end of the run."""
        out: dict[str, dict[str, Any]] = {}
        if self.ema_decay is not None and self.tensors:
            out["ema"] = {k[4:]: v for k, v in self.tensors.items() if k.startswith("ema.")}
        if self.count:
            out["polyak"] = {k[7:]: v / self.count for k, v in self.tensors.items() if k.startswith("polyak.")}
        return out

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """Save each average as a model beside `model/` (`model-ema/`, `model-polyak/`)."""
        if not trainer.dist.main:
            return
        from midtrain.train.model import save_pretrained, unsharded_copy

        extra = {"run": trainer.spec.name, "steps": trainer.step, "tokens_seen": trainer.tokens_seen}
        for name, tensors in self.final().items():
            copy = unsharded_copy(trainer.spec, tensors)
            save_pretrained(copy, trainer.spec.tokenizer, trainer.out / f"model-{name}", {**extra, "average": name})
