"""EMA and/or Polyak averaging of the weights: a stateful callback, checkpointed in averages.safetensors.

EMA keeps `ema.<param>` (fp32), updated after every step; Polyak keeps `polyak.<param>`, the sum
of snapshots taken at `polyak.checkpoints` evenly spaced steps to the end of the stage, and their
count (`_polyak_count`). At the end, `model-ema/` and `model-polyak/` are saved beside `model/`.

Under FSDP2 each rank keeps only its shard of every average (DTensors laid out as the parameters:
the update is elementwise, so no step gathers anything), the distributed checkpoint holds them
sharded, and the final averaged models are exported from the last checkpoint, streamed.
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


def _like(param: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """`full` (a whole tensor, on every rank) laid out as `param` is: this rank's shard of it under
    FSDP2 (no communication), `full` itself otherwise."""
    mesh = getattr(param, "device_mesh", None)
    if mesh is None or hasattr(full, "device_mesh"):  # not sharded, or sharded already (read from DCP)
        return full
    from torch.distributed.tensor import distribute_tensor

    placements = param.placements  # type: ignore[attr-defined]  # a DTensor's
    return distribute_tensor(full.to(param.device), mesh, placements, src_data_rank=None)


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
                    key = f"ema.{name}"
                    if key not in self.tensors:
                        self.tensors[key] = param.detach().clone().float()
                    else:
                        self.tensors[key].mul_(self.ema_decay).add_(param.detach().float(), alpha=1 - self.ema_decay)
            if step in self.snapshot_steps:
                for name, param in self.params.items():
                    key = f"polyak.{name}"
                    value = param.detach().float()
                    self.tensors[key] = value.clone() if key not in self.tensors else self.tensors[key].add_(value)
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

    def checkpoint_template(self, trainer: Trainer, step: int) -> dict[str, Any]:
        """What on_checkpoint_save gives at `step`, as zeros laid out as on this rank."""
        import torch

        kinds = (["ema"] if self.ema_decay is not None and step > 0 else []) + (
            ["polyak"] if any(s <= step for s in self.snapshot_steps) else []
        )
        out: dict[str, Any] = {
            f"{kind}.{name}": torch.zeros_like(param.detach(), dtype=torch.float32)
            for kind in kinds
            for name, param in self.params.items()
        }
        return {**out, "_polyak_count": torch.zeros(1, dtype=torch.int64)} if out else {}

    def on_checkpoint_load(self, trainer: Trainer, state: dict[str, Any] | None) -> None:
        tensors = dict(state or {})
        count = tensors.pop("_polyak_count", None)
        self.count = int(count[0]) if count is not None else 0
        # whole tensors from a single-file checkpoint become this rank's shards under FSDP2
        self.tensors = {key: _like(self.params[key.split(".", 1)[1]], value) for key, value in tensors.items()}

    def final(self) -> dict[str, dict[str, Any]]:
        """The averaged weights by kind ("ema", "polyak"), as they are at the end of the run (this
        rank's shards under FSDP2, whose run exports them from its last checkpoint instead)."""
        out: dict[str, dict[str, Any]] = {}
        if self.ema_decay is not None and self.tensors:
            out["ema"] = {k[4:]: v for k, v in self.tensors.items() if k.startswith("ema.")}
        if self.count:
            out["polyak"] = {k[7:]: v / self.count for k, v in self.tensors.items() if k.startswith("polyak.")}
        return out

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """Save each average as a model beside `model/` (`model-ema/`, `model-polyak/`); a distributed
        run exports them from its final checkpoint, every rank taking part."""
        extra = {"run": trainer.spec.name, "steps": trainer.step, "tokens_seen": trainer.tokens_seen}
        if trainer.dist.world > 1:
            from midtrain.train.export import export_in_run
            from midtrain.train.saving import final_checkpoint

            kinds = (["ema"] if self.ema_decay is not None and self.tensors else []) + (
                ["polyak"] if self.count else []
            )
            for kind in kinds:
                out = trainer.out / f"model-{kind}"
                export_in_run(trainer, final_checkpoint(trainer), out, kind, {**extra, "average": kind})
            return
        if not trainer.dist.main:
            return
        from midtrain.train.model import save_pretrained, unsharded_copy

        for name, tensors in self.final().items():
            copy = unsharded_copy(trainer.spec, tensors)
            save_pretrained(copy, trainer.spec.tokenizer, trainer.out / f"model-{name}", {**extra, "average": name})
