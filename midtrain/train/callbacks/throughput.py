"""Throughput and MFU (compare torchtitan's metrics component), reported in the run's summary.

tokens/s is measured over whole iterations (the optimizer step and every callback's work after
it; checkpoint writes excluded), the first iteration of a fit excluded as it pays one-off costs
(allocation, compilation). A run of one step reports that step's own rate. MFU is model FLOPs
utilisation: 6·N FLOPs per token (N parameters; forward and backward, attention's extra work not
counted) at the measured tokens/s, against the peak of the devices (`peak_flops` per device × the
world size). The peak is passed in, or measured (`peak_flops="measure"`: a large matmul on the
device at the run's precision, before training starts); with neither, no MFU is reported.

Summary keys: tokens_per_s (always), mfu (with a peak), peak_memory_gib (GPU: the most allocated).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from midtrain.train.callbacks.base import Callback

if TYPE_CHECKING:
    import torch

    from midtrain.train.loop import StepResult, Trainer


def measure_peak_flops(
    device: torch.device, dtype: torch.dtype | None = None, size: int | None = None, repeats: int = 20
) -> float:
    """FLOP/s of a square matmul on `device` (fp32 unless `dtype`): a practical peak to compare against."""
    import torch

    dtype = dtype or torch.float32
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


class Throughput(Callback):
    def __init__(self, peak_flops: float | Literal["measure"] | None = None) -> None:
        self.peak_flops = peak_flops
        self.seconds = 0.0  # in the iterations measured
        self.steps = 0
        self.tokens = 0
        self.single = 0.0  # the rate of the last step alone (the fallback for a run of one step)
        self.started: float | None = None
        self.first = True

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.peak_flops == "measure":
            import torch

            dtype = torch.bfloat16 if trainer.spec.precision == "bf16" else torch.float32
            self.peak_flops = measure_peak_flops(trainer.dist.device, dtype)

    def on_step_start(self, trainer: Trainer, step: int) -> None:
        self.started = time.perf_counter()

    def on_step_end(self, trainer: Trainer, step: int, result: StepResult) -> None:
        """Runs last: the iteration's time includes every other callback's work."""
        self.single = result.tokens / max(result.seconds, 1e-9)
        if self.first or self.started is None:
            self.first = False
            return
        self.seconds += time.perf_counter() - self.started
        self.steps += 1
        self.tokens += result.tokens

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.steps and self.seconds > 0 else self.single

    def mfu(self, parameters: int, world: int) -> float | None:
        if not isinstance(self.peak_flops, (int, float)) or self.peak_flops <= 0:
            return None
        return 6 * parameters * self.tokens_per_s / (self.peak_flops * world)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        summary["tokens_per_s"] = self.tokens_per_s
        mfu = self.mfu(trainer.parameters, trainer.dist.world)
        if mfu is not None:
            summary["mfu"] = mfu
        if trainer.dist.device.type == "cuda":
            import torch

            summary["peak_memory_gib"] = torch.cuda.max_memory_allocated(trainer.dist.device) / 2**30
