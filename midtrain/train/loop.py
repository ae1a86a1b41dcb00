"""The training loop for one run of one stage. The whole step is on one screen (`_step`).

Everything else the loop does is a callback (midtrain/train/callbacks/): weight averaging, dvclive
logging, the progress bar and the throughput meter are built in, and `Trainer(spec, callbacks=...)`
adds more. Checkpoints and the final model are written by midtrain/train/saving.py; resuming from
checkpoints, with its fallbacks, is midtrain/train/resume.py.

Exactness: the batch at step s is a pure function of (data seed, s, rank, world size), the LR is a
pure function of s, and a checkpoint holds the model, optimizer, averages and RNG state, so a run
killed at any point and resumed from its last checkpoint reaches the same weights, bit for bit on
the CPU, as one that was never interrupted.

A batch ramp (RunSpec.batch_ramp) changes the sequences per step from a step on: the micro-batch
stays, gradient accumulation grows, the loss stays a mean over the step's tokens and the data
position advances by the sequences each step consumed (the sampler's step -> positions mapping).
`save_at` keeps model snapshots in out/at-step-<step>/model (saving.py); `optimizer_from` starts the
optimizer from another run's final state (resume.py:carry_optimizer), unless the run resumes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError
from midtrain.train import saving
from midtrain.train.callbacks import Averaging, Callback, with_defaults
from midtrain.train.config import RunSpec
from midtrain.train.distributed import Dist, all_reduce_sum, choose_strategy, setup, threads_per_process, wrap
from midtrain.train.optim import set_lr
from midtrain.train.workspace import check_writable, claim, open_data

if TYPE_CHECKING:
    import torch


class NonFiniteLoss(MidtrainError):
    pass


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    tokens: int
    seconds: float


def _loss_fn(logits: torch.Tensor, targets: torch.Tensor, z_loss: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the tokens, and the summed z-loss term (log² Z), in fp32."""
    import torch

    logits = logits.float().reshape(-1, logits.shape[-1])
    ce = torch.nn.functional.cross_entropy(logits, targets.reshape(-1), reduction="sum")
    z = torch.logsumexp(logits, dim=-1).pow(2).sum() * z_loss if z_loss else torch.zeros((), device=logits.device)
    return ce, z


class Trainer:
    def __init__(
        self, spec: RunSpec, dist: Dist | None = None, progress: bool = True, callbacks: Iterable[Callback] = ()
    ):
        import torch

        self.spec = spec
        self.dist = dist or setup()
        torch.set_num_threads(threads_per_process(spec.threads, self.dist.local_world))
        self.progress = progress and self.dist.main
        self.out = spec.out
        self.checkpoint_dir = self.out / "checkpoints"
        if self.dist.main:
            check_writable(self.out)
            claim(self.out, spec)
        self._build()
        self.step = 0
        self.tokens_seen = 0
        self.callbacks = with_defaults(callbacks)
        self._call("on_attach")

    def _resolve(self, config: Any) -> None:
        """The settings left to `auto` (train/auto.py), decided for this machine, printed, and recorded
        with their reasons in out/resolved.json. A run that finds that record (it resumes, or restarts
        with the same spec) keeps the recorded choices, so its numerics stay those of its start."""
        import json

        from midtrain.io import write_json
        from midtrain.train.auto import SETTINGS, Choice, Footprint, describe, resolve
        from midtrain.train.model import supports_sdpa

        machine = self._machine()
        footprint = Footprint.of(config, self.parameters, sdpa=supports_sdpa(config))
        shards = self.dist.world if self.strategy == "fsdp" else 1
        choices = resolve(self.spec, machine, footprint, self.dist.world, shards)
        record = self.out / "resolved.json"
        try:
            previous = json.loads(record.read_text()) if record.exists() else {}
        except (OSError, json.JSONDecodeError):
            previous = {}
        auto = [name for name in SETTINGS if getattr(self.spec, name) == "auto"]
        for name in auto:
            kept = previous.get(name, {})
            if isinstance(kept, dict) and "value" in kept and kept["value"] != choices[name].value:
                choices[name] = Choice(kept["value"], f"{kept.get('reason', '')} (as resolved when the run started)")
        self.spec = self.spec.model_copy(update={name: choices[name].value for name in auto})
        if self.dist.main:
            if auto:
                print(f"{self.spec.name}: {describe(choices)} (auto: see {record})", flush=True)
            write_json(record, {name: choice.to_json() for name, choice in choices.items()})

    def _machine(self) -> Any:
        """This machine, as `auto` sees it; with several ranks, the least any of them has (they must agree)."""
        import dataclasses

        import torch

        from midtrain.train.auto import Machine

        machine = Machine.probe(self.dist.device, self.dist.local_world, torch.get_num_threads())
        if self.dist.world == 1:
            return machine
        values = torch.tensor(
            [machine.free_bytes, machine.bf16, machine.flash_attn, machine.compiler], dtype=torch.float64
        )
        values = values.to(self.dist.device)
        torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MIN)
        free, bf16, flash, compiler = values.tolist()
        return dataclasses.replace(
            machine, free_bytes=int(free), bf16=bool(bf16), flash_attn=bool(flash), compiler=bool(compiler)
        )

    def _build(self) -> None:
        """Tokenizer, data, the resolved settings, the (wrapped) model and the optimizer, each checked
        before it is allocated."""
        import torch

        from midtrain.data.tokenizer import load_tokenizer
        from midtrain.train.model import check_fits, check_vocab, count_parameters, load_model, model_config
        from midtrain.train.optim import build_optimizer

        self.tokenizer = load_tokenizer(self.spec.tokenizer)
        self.sampler, self.shards, _ = open_data(self.spec)
        self._check_batches()
        self.sampler.check_repetition(self.spec.steps)
        config = model_config(self.spec)
        self.parameters = count_parameters(config)
        self.strategy = choose_strategy(self.spec.strategy, self.dist.world, self.parameters, self.dist.device)
        self._resolve(config)
        spec = self.spec
        check_fits(config, self.parameters, spec, self.dist.device, self.dist.world)
        model = load_model(spec)
        check_vocab(model, self.tokenizer.vocab_size, spec.tokenizer)
        # transformers wraps `to` in a decorator whose type hides torch's signature
        model.to(self.dist.device)  # type: ignore[arg-type]
        if spec.activation_checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        self.model = wrap(model, self.strategy, self.dist, spec.precision)
        if spec.compile:
            from midtrain.train.auto import compile_cache_dir

            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))  # compiled graphs persist
        self.forward = torch.compile(self.model) if spec.compile else self.model
        self.optimizer = build_optimizer(self.model, spec.optimizer, lr=self.lr(0), kernel=str(spec.optimizer_kernel))

    def _check_batches(self) -> None:
        """Every batch of the run (global_batch, then each batch_ramp phase) must split evenly over the ranks."""
        world = self.dist.world
        batches = [("global_batch", self.spec.global_batch)]
        batches += [(f"batch_ramp[{i}].global_batch", p.global_batch) for i, p in enumerate(self.spec.batch_ramp)]
        for where, size in batches:
            if size % world:
                raise MidtrainError.single(
                    f"a batch of {size} sequences does not split evenly over {world} ranks",
                    path=where,
                    expected=f"a multiple of {world} (the number of processes)",
                    found=str(size),
                )

    # ---- state ----

    def global_batch(self, step: int) -> int:
        """Sequences in optimizer step `step` (0-based): global_batch, or the batch_ramp phase it falls in."""
        size = self.spec.global_batch
        for phase in self.spec.batch_ramp:
            if step >= phase.step:
                size = phase.global_batch
        return size

    @property
    def averages(self) -> Averaging:
        """The weight-averaging callback (EMA / Polyak)."""
        return next(c for c in self.callbacks if isinstance(c, Averaging))

    def lr(self, step: int) -> float:
        return self.spec.schedule.lr_at(step, self.spec.steps, self.spec.base_lr)

    def _call(self, hook: str, *args: object) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def save_checkpoint(self) -> None:
        """Model, optimizer, RNG and the callbacks' state (see midtrain/train/saving.py)."""
        saving.save_checkpoint(self)

    def resume(self) -> bool:
        """Continue from the newest usable checkpoint in `out/checkpoints` (see midtrain/train/resume.py)."""
        from midtrain.train.resume import resume

        return resume(self)

    def barrier(self) -> None:
        import torch

        if self.dist.world > 1:
            torch.distributed.barrier()

    # ---- one optimizer step ----

    def _step(self, step: int) -> StepResult:
        import torch
        from torch.nn.parallel import DistributedDataParallel

        spec, dist = self.spec, self.dist
        start = time.perf_counter()
        set_lr(self.optimizer, self.lr(step))
        sequences = self.global_batch(step)
        # this rank's token windows (FIM applied where the run has it): a pure function of the step
        windows = torch.from_numpy(self.sampler.read(self.shards, step, dist.rank, dist.world))
        if windows.shape[0] * dist.world != sequences:
            raise MidtrainError.single(
                f"the data sampler gave {windows.shape[0]} sequences × {dist.world} ranks for step {step}, "
                f"but the run's batch there is {sequences} (global_batch / batch_ramp)"
            )
        windows = windows.to(dist.device, non_blocking=True)
        targets_global = sequences * spec.sequence_length
        size = int(spec.micro_batch)  # resolved in _resolve
        micro = [windows[i : i + size] for i in range(0, windows.shape[0], size)]
        # Gradients are sums over this rank's tokens / all tokens of the global batch; DDP and FSDP
        # average over ranks, so each rank's loss is scaled by the world size to make it a sum.
        scale = dist.world / targets_global
        loss_sum = 0.0
        autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=spec.precision == "bf16")
        ddp = self.model if isinstance(self.model, DistributedDataParallel) else None  # syncs on the last one only
        for index, chunk in enumerate(micro):
            last = index == len(micro) - 1
            context = ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()
            with context:
                with autocast:
                    logits = self.forward(input_ids=chunk[:, :-1]).logits
                ce, z = _loss_fn(logits, chunk[:, 1:], spec.z_loss)
                ((ce + z) * scale).backward()
            loss_sum += float(ce.detach())
        loss = all_reduce_sum(loss_sum, dist) / targets_global
        clip = spec.optimizer.grad_clip or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss.single(
                f"training stopped: the loss became {loss} at step {step} (grad norm {grad_norm}); the last good "
                f"checkpoint in {self.checkpoint_dir} is kept. Lower the LR, enable z_loss or check the data"
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss, grad_norm, targets_global, time.perf_counter() - start)

    # ---- the run ----

    def _check_snapshots(self) -> None:
        """A resumed run cannot rebuild the snapshots of steps it has passed: say so if one is gone."""
        lost = [step for step in self.spec.save_at if step <= self.step and not saving.has_snapshot(self, step)]
        if lost and self.dist.main:
            warnings.warn(
                f"{self.spec.name}: the model snapshots of steps {lost} (save_at) are missing from {self.out} and "
                "cannot be rebuilt by resuming past them; rerun the stage from scratch to get them",
                stacklevel=3,
            )

    def fit(self, resume: bool = True) -> dict[str, Any]:
        spec = self.spec
        resumed = self.resume() if resume else False
        if spec.optimizer_from is not None and not resumed and self.step == 0:  # a fresh start, not a resumed run
            from midtrain.train.resume import carry_optimizer

            carry_optimizer(self)
        self._check_snapshots()
        self._call("on_fit_start")
        last: StepResult | None = None
        try:
            while self.step < spec.steps:
                self._call("on_step_start", self.step)
                result = self._step(self.step)
                self.step += 1
                self.tokens_seen += result.tokens
                self._call("on_step_end", self.step, result)
                last = result
                if self.step in spec.save_at:  # before the checkpoint of this step: a resume past it never rewrites it
                    saving.save_snapshot(self)
                if self.step % spec.checkpoint_every == 0 and self.step < spec.steps:
                    self.save_checkpoint()
        finally:
            self._call("on_loop_end")
        self.save_checkpoint()
        # the final model; the callbacks finish (averaged models, metrics) and complete the summary
        summary = saving.save_final_model(self, last, resumed)
        self._call("on_fit_end", summary)
        saving.write_summary(self, summary)
        return summary


def train(
    spec: RunSpec, resume: bool = True, progress: bool = True, callbacks: Iterable[Callback] = ()
) -> dict[str, Any]:
    """Train one run; the entry point of `midtrain train` and of each torchrun rank."""
    trainer = Trainer(spec, progress=progress, callbacks=callbacks)
    return trainer.fit(resume=resume)


def run_from_file(path: Path, resume: bool = True) -> dict[str, Any]:
    spec = RunSpec.load(path)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return train(spec, resume=resume)
