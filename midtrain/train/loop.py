"""The training loop for one run of one stage. The whole step is on one screen (`_step`).

Exactness: the batch at step s is a pure function of (data seed, s, rank, world size), the LR is a
pure function of s, and a checkpoint holds the model, optimizer, averages and RNG state, so a run
killed at any point and resumed from its last checkpoint reaches the same weights, bit for bit on
the CPU, as one that was never interrupted.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.data.mixture import MixtureSampler, gather
from midtrain.data.packing import open_shard, read_manifest
from midtrain.errors import MidtrainError, short
from midtrain.io import write_json
from midtrain.progress import is_tty
from midtrain.train import checkpoint as ckpt
from midtrain.train.config import RunSpec
from midtrain.train.distributed import Dist, all_reduce_sum, choose_strategy, setup, threads_per_process, wrap


class NonFiniteLoss(MidtrainError):
    pass


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    tokens: int
    seconds: float


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise MidtrainError.single(f"output directory is not writable: {exc.strerror or exc}", file=out) from None


def _claim(out: Path, spec: RunSpec) -> None:
    """Record the spec in `out/spec.json`. Checkpoints of a different spec are not resumed: a run
    directory reused for changed settings starts afresh (what it held is in DVC's cache)."""
    import shutil

    current = spec.model_dump(mode="json")
    path = out / "spec.json"
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous != current:
            for name in ("checkpoints", "model", "model-ema", "model-polyak", "dvclive", "summary.json"):
                target = out / name
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            print(f"{spec.name}: settings changed since the last run in {out}; starting afresh", flush=True)
    write_json(path, current)


def _sampler(spec: RunSpec) -> tuple[MixtureSampler, dict[str, Any], dict[str, Any]]:
    shard_dir = spec.data / "shards"
    manifest = read_manifest(shard_dir)
    streams = manifest["streams"]
    missing = [name for name in spec.streams if name not in streams]
    if missing:
        raise MidtrainError.single(
            f"the run mixes streams that {shard_dir} does not have: {', '.join(missing)}",
            expected=", ".join(sorted(streams)), found=", ".join(missing),
        )
    sampler = MixtureSampler(
        {n: streams[n]["tokens"] for n in spec.streams}, spec.streams, spec.sequence_length, spec.global_batch,
        seed=spec.data_seed, max_epochs=spec.max_epochs, on_repeat=spec.on_repeat,
    )
    shards = {n: open_shard(shard_dir, streams[n]) for n in spec.streams}
    return sampler, shards, manifest


class Averages:
    """EMA and/or Polyak (uniform average of evenly spaced snapshots) of the weights, checkpointed."""

    def __init__(self, spec: RunSpec, model: Any):
        self.ema_decay = spec.ema_decay
        self.tensors: dict[str, Any] = {}
        self.snapshot_steps: set[int] = set()
        if spec.polyak is not None:
            k = spec.polyak.checkpoints
            self.snapshot_steps = {round(spec.steps * (i + 1) / k) for i in range(k)}
        self.count = 0
        self.params = dict(_named_params(model))

    @property
    def active(self) -> bool:
        return self.ema_decay is not None or bool(self.snapshot_steps)

    def update(self, completed_steps: int) -> None:
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
            if completed_steps in self.snapshot_steps:
                for name, param in self.params.items():
                    key = f"polyak.{name}"
                    full = _full(param).detach().float()
                    self.tensors[key] = full.clone() if key not in self.tensors else self.tensors[key].add_(full)
                self.count += 1

    def state(self) -> dict[str, Any]:
        import torch

        return {**self.tensors, "_polyak_count": torch.tensor([self.count])} if self.tensors else {}

    def load(self, tensors: dict[str, Any] | None) -> None:
        if not tensors:
            return
        self.count = int(tensors.pop("_polyak_count", [0])[0])
        self.tensors = dict(tensors)

    def final(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if self.ema_decay is not None and self.tensors:
            out["ema"] = {k[4:]: v for k, v in self.tensors.items() if k.startswith("ema.")}
        if self.count:
            out["polyak"] = {k[7:]: v / self.count for k, v in self.tensors.items() if k.startswith("polyak.")}
        return out


def _named_params(model: Any) -> Any:
    inner = getattr(model, "module", model)
    return inner.named_parameters()


def _full(param: Any) -> Any:
    """The full tensor of a (possibly FSDP-sharded) parameter."""
    return param.full_tensor() if hasattr(param, "full_tensor") else param


def _loss_fn(logits: Any, targets: Any, z_loss: float | None) -> tuple[Any, Any]:
    """Summed cross-entropy over the tokens, and the summed z-loss term (log² Z), in fp32."""
    import torch

    logits = logits.float().reshape(-1, logits.shape[-1])
    ce = torch.nn.functional.cross_entropy(logits, targets.reshape(-1), reduction="sum")
    z = torch.logsumexp(logits, dim=-1).pow(2).sum() * z_loss if z_loss else torch.zeros((), device=logits.device)
    return ce, z


class Trainer:
    def __init__(self, spec: RunSpec, dist: Dist | None = None, progress: bool = True):
        import torch

        self.spec = spec
        self.dist = dist or setup()
        torch.set_num_threads(threads_per_process(spec.threads, self.dist.local_world))
        self.progress = progress and self.dist.main
        self.out = spec.out
        if self.dist.main:
            _check_writable(self.out)
            _claim(self.out, spec)
        from midtrain.data.tokenizer import load_tokenizer
        from midtrain.train.model import check_fits, check_vocab, count_parameters, load_model, model_config

        self.tokenizer = load_tokenizer(spec.tokenizer)
        self.sampler, self.shards, _ = _sampler(spec)
        self.sampler.check_repetition(spec.steps)
        config = model_config(spec)
        self.parameters = count_parameters(config)
        check_fits(config, self.parameters, spec, self.dist.device, self.dist.world)
        model = load_model(spec)
        check_vocab(model, self.tokenizer.vocab_size, spec.tokenizer)
        model.to(self.dist.device)
        if spec.activation_checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        self.strategy = choose_strategy(spec.strategy, self.dist.world, self.parameters, self.dist.device)
        self.model = wrap(model, self.strategy, self.dist, spec.precision)
        self.forward = torch.compile(self.model) if spec.compile else self.model
        from midtrain.train.optim import build_optimizer

        self.optimizer = build_optimizer(self.model, spec.optimizer, lr=self._lr(0))
        self.averages = Averages(spec, self.model)
        self.step = 0
        self.tokens_seen = 0
        self.checkpoint_dir = self.out / "checkpoints"
        self.loop_seconds = 0.0  # time in optimizer steps after the first one (benchmarks read it)
        self.loop_steps = 0

    # ---- state ----

    def _lr(self, step: int) -> float:
        return self.spec.schedule.lr_at(step, self.spec.steps, self.spec.base_lr)

    def _state_dicts(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(self.model, self.optimizer, options=options)

    def save_checkpoint(self) -> None:
        model_state, optimizer_state = self._state_dicts()  # collective under FSDP: every rank calls it
        if self.dist.main:
            state = {"tokens_seen": self.tokens_seen, "rng": ckpt.rng_state(), "run": self.spec.name, "parameters": self.parameters}
            ckpt.save(self.checkpoint_dir, self.step, model_state, optimizer_state, state, self.averages.state(), self.spec.keep_last)
        self._barrier()

    def resume(self) -> bool:
        """Continue from the newest usable checkpoint in `out/checkpoints`, if there is one.

        Nothing in a checkpoint is trusted: one that does not verify, cannot be read, disagrees with
        this run (more steps than the run has, another model, other averages) or fails to apply is
        reported with a warning and the previous one is tried; with none usable the run starts
        afresh. Every rank reads the same files and the ranks agree on each decision, so all of them
        resume from the same checkpoint (or none)."""
        import warnings

        ckpt.clean_partial(self.checkpoint_dir) if self.dist.main else None
        self._barrier()
        candidates = list(reversed(ckpt.list_checkpoints(self.checkpoint_dir)))
        self._same_on_every_rank([p.name for p in candidates])
        if not candidates:
            return False
        initial_rng = ckpt.rng_state()
        touched = False  # whether a failed attempt may have changed the model or optimizer
        for path in candidates:
            loaded, problem = None, ckpt.verify(path)
            if problem is None:
                try:
                    loaded = self._read_checkpoint(path)
                except Exception as exc:  # noqa: BLE001 - any defect of the files: fall back
                    problem = _problem_text(exc, path)
            problem = self._agree(problem)
            if problem is None and loaded is not None:
                touched = True
                try:
                    self._apply_checkpoint(*loaded)
                except Exception as exc:  # noqa: BLE001
                    problem = _problem_text(exc, path)
                problem = self._agree(problem)
                if problem is None:
                    return True
            warnings.warn(f"skipping checkpoint {path}: {problem}; falling back to the previous one", stacklevel=2)
        warnings.warn(f"no usable checkpoint in {self.checkpoint_dir}; starting from scratch", stacklevel=2)
        if touched:
            self._reset_to_initial(initial_rng)
        return False

    def _read_checkpoint(self, path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """Load a checkpoint and check it against this run and model; changes nothing."""
        model_state, optimizer_state, state, averages = ckpt.load(path)
        if state["step"] > self.spec.steps:
            raise MidtrainError.single(
                "checkpoint is beyond the end of this run", file=path,
                expected=f"at most {self.spec.steps} steps", found=f"step {state['step']}",
            )
        if state.get("parameters") not in (None, self.parameters):
            raise MidtrainError.single(
                "checkpoint does not match this model", file=path,
                expected=f"{self.parameters:,} parameters", found=f"{state['parameters']:,}",
            )
        inner = getattr(self.model, "module", self.model)
        expected = {name: tuple(t.shape) for name, t in inner.state_dict().items()}
        found = {name: tuple(t.shape) for name, t in model_state.items()}
        if found != expected:
            raise MidtrainError.single(
                "checkpoint does not match this model", file=path / "model.safetensors",
                expected=_shape_summary(expected, found), found=_shape_summary(found, expected),
            )
        self._check_optimizer_state(optimizer_state, path / "optimizer.pt")
        self._check_averages(averages, state["step"], path / "averages.safetensors")
        return model_state, optimizer_state, state, averages

    def _check_optimizer_state(self, optimizer_state: dict[str, Any], file: Path) -> None:
        """The saved optimizer state must have this optimizer's groups, parameters and shapes."""
        names = {id(param): name for name, param in _named_params(self.model)}
        shapes = {name: tuple(param.shape) for name, param in _named_params(self.model)}
        groups = [[names[id(param)] for param in group["params"]] for group in self.optimizer.param_groups]
        saved = [group["params"] for group in optimizer_state["param_groups"]]
        if saved != groups:
            raise MidtrainError.single(
                "optimizer state does not match this model's parameter groups", file=file,
                expected=f"{len(groups)} groups of {[len(g) for g in groups]} parameters",
                found=f"{len(saved)} groups of {[len(g) if isinstance(g, list) else g for g in saved]} parameters",
            )
        for name, entry in optimizer_state["state"].items():
            if name not in shapes:
                raise MidtrainError.single(f"optimizer state holds an unknown parameter {short(name)}", file=file)
            for key, value in entry.items():
                if getattr(value, "ndim", 0) and tuple(value.shape) != shapes[name]:
                    raise MidtrainError.single(
                        f"optimizer state {name}.{key} has the wrong shape", file=file,
                        expected=str(shapes[name]), found=str(tuple(value.shape)),
                    )

    def _check_averages(self, averages: dict[str, Any] | None, step: int, file: Path) -> None:
        """EMA / Polyak tensors must be those this run keeps at `step`, of the model's shapes."""
        shapes = {name: tuple(param.shape) for name, param in _named_params(self.model)}
        tensors = dict(averages or {})
        count = tensors.pop("_polyak_count", None)
        want_ema = self.averages.ema_decay is not None and step > 0
        want_polyak = sum(1 for s in self.averages.snapshot_steps if s <= step)
        found_count = int(count.reshape(-1)[0]) if count is not None and count.numel() == 1 else None
        expected = {f"ema.{n}": s for n, s in shapes.items()} if want_ema else {}
        expected.update({f"polyak.{n}": s for n, s in shapes.items()} if want_polyak else {})
        found = {name: tuple(t.shape) for name, t in tensors.items()}
        if found != expected or found_count != (want_polyak if expected else None):
            raise MidtrainError.single(
                "checkpoint averages (EMA / Polyak) do not match this run", file=file,
                expected=f"{_shape_summary(expected, found)}; {want_polyak} Polyak snapshots",
                found=f"{_shape_summary(found, expected)}; {found_count} Polyak snapshots",
            )

    def _apply_checkpoint(self, model_state: dict[str, Any], optimizer_state: dict[str, Any], state: dict[str, Any],
                          averages: dict[str, Any] | None) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        self.averages.tensors, self.averages.count = {}, 0  # nothing left over from a failed attempt
        set_state_dict(self.model, self.optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                       options=StateDictOptions(full_state_dict=True))
        self.averages.load(averages)
        ckpt.set_rng_state(state["rng"])
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]

    def _reset_to_initial(self, rng: dict[str, Any]) -> None:
        """Undo a failed attempt to apply a checkpoint: the initial weights, a fresh optimizer and RNG."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from midtrain.train.model import load_model
        from midtrain.train.optim import build_optimizer

        set_model_state_dict(self.model, load_model(self.spec).state_dict(), options=StateDictOptions(full_state_dict=True))
        self.optimizer = build_optimizer(self.model, self.spec.optimizer, lr=self._lr(0))
        self.averages.tensors, self.averages.count = {}, 0
        ckpt.set_rng_state(rng)
        self.step = 0
        self.tokens_seen = 0

    def _agree(self, problem: str | None) -> str | None:
        """The same decision on every rank: a checkpoint that failed on any rank is skipped by all."""
        if self.dist.world == 1:
            return problem
        failures = all_reduce_sum(0.0 if problem is None else 1.0, self.dist)
        if problem is None and failures:
            return f"it could not be loaded on {int(failures)} other rank(s)"
        return problem

    def _same_on_every_rank(self, names: list[str]) -> None:
        """Every rank must see the same checkpoints (a shared output directory), or they would diverge."""
        if self.dist.world == 1:
            return
        import zlib

        import torch

        digest = zlib.crc32("\n".join(names).encode())
        values = torch.tensor([len(names), -len(names), digest, -digest], dtype=torch.float64, device=self.dist.device)
        torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
        if values[0] != -values[1] or values[2] != -values[3]:
            raise MidtrainError.single(
                "the ranks see different checkpoints; the output directory must be shared by every process",
                file=self.checkpoint_dir,
            )

    def _barrier(self) -> None:
        import torch

        if self.dist.world > 1:
            torch.distributed.barrier()

    # ---- one optimizer step ----

    def _step(self, step: int) -> StepResult:
        import torch

        spec, dist = self.spec, self.dist
        start = time.perf_counter()
        lr = self._lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        windows = torch.from_numpy(gather(self.shards, self.sampler.batch(step, dist.rank, dist.world), spec.sequence_length))
        windows = windows.to(dist.device, non_blocking=True)
        targets_global = spec.global_batch * spec.sequence_length
        micro = [windows[i : i + spec.micro_batch] for i in range(0, windows.shape[0], spec.micro_batch)]
        # Gradients are sums over this rank's tokens / all tokens of the global batch; DDP and FSDP
        # average over ranks, so each rank's loss is scaled by the world size to make it a sum.
        scale = dist.world / targets_global
        loss_sum = 0.0
        autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=spec.precision == "bf16")
        for index, chunk in enumerate(micro):
            sync = index == len(micro) - 1 or self.strategy != "ddp"
            context = self.model.no_sync() if not sync else _null()
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

    def fit(self, resume: bool = True) -> dict[str, Any]:
        spec = self.spec
        resumed = self.resume() if resume else False
        live = _Live(self.out / "dvclive", self.step, enabled=self.dist.main)
        reporter = _Reporter(spec.name, spec.steps, self.step, enabled=self.progress)
        last: StepResult | None = None
        tokens_per_s = 0.0
        try:
            while self.step < spec.steps:
                iteration_start = time.perf_counter()
                result = self._step(self.step)
                self.step += 1
                self.tokens_seen += result.tokens
                self.averages.update(self.step)
                tokens_per_s = result.tokens / max(result.seconds, 1e-9)
                if self.dist.main and (self.step % spec.log_every == 0 or self.step == spec.steps):
                    live.log(self.step, {"loss": result.loss, "lr": self._lr(self.step - 1), "grad_norm": result.grad_norm,
                                         "tokens_seen": self.tokens_seen, "tokens_per_s": tokens_per_s})
                reporter.update(self.step, result.loss, tokens_per_s)
                if last is not None:  # whole iterations (step, averages, logging), the first one excluded
                    self.loop_seconds += time.perf_counter() - iteration_start
                    self.loop_steps += 1
                last = result
                if self.step % spec.checkpoint_every == 0 and self.step < spec.steps:
                    self.save_checkpoint()
        finally:
            reporter.close()
        self.save_checkpoint()
        summary = self._finish(last, tokens_per_s, resumed)
        live.close()
        return summary

    def _finish(self, last: StepResult | None, tokens_per_s: float, resumed: bool) -> dict[str, Any]:
        from midtrain.train.model import save_pretrained

        model_state, _ = self._state_dicts()
        averages = self.averages.final()
        summary = {
            "run": self.spec.name, "steps": self.step, "tokens_seen": self.tokens_seen, "parameters": self.parameters,
            "final_loss": last.loss if last else None, "tokens_per_s": tokens_per_s, "resumed": resumed,
            "strategy": self.strategy, "world_size": self.dist.world,
        }
        if self.dist.main:
            inner = getattr(self.model, "module", self.model)
            extra = {"run": self.spec.name, "steps": self.step, "tokens_seen": self.tokens_seen}
            if self.strategy == "fsdp":
                inner = _unsharded_copy(self.spec, model_state)
            save_pretrained(inner, self.spec.tokenizer, self.out / "model", extra)
            for name, tensors in averages.items():
                copy = _unsharded_copy(self.spec, tensors)
                save_pretrained(copy, self.spec.tokenizer, self.out / f"model-{name}", {**extra, "average": name})
            write_json(self.out / "summary.json", summary)
        self._barrier()
        return summary


def _problem_text(exc: BaseException, checkpoint: Path) -> str:
    """What went wrong with a checkpoint, in one line (a MidtrainError with its file, expected and found)."""
    if isinstance(exc, MidtrainError):
        texts = []
        for problem in exc.problems:
            where = problem.file
            if where is not None and Path(where) == checkpoint:
                where = None
            elif where is not None and Path(where).is_relative_to(checkpoint):
                where = Path(where).relative_to(checkpoint)
            texts.append(" ".join(dataclasses.replace(problem, file=where).render().split()))
        return "; ".join(texts)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def _shape_summary(these: dict[str, tuple[int, ...]], others: dict[str, tuple[int, ...]]) -> str:
    """Where `these` tensors differ from `others`: a few names, with shapes (for error messages)."""
    differ = [f"{name} {list(shape)}" for name, shape in these.items() if others.get(name) != shape]
    extra = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
    return f"{len(these)} tensors" + (f", e.g. {', '.join(differ[:3])}{extra}" if differ else "")


def _unsharded_copy(spec: RunSpec, tensors: dict[str, Any]) -> Any:
    """A plain CPU model holding `tensors` (for saving averages or FSDP-gathered weights)."""
    from midtrain.train.model import load_model

    model = load_model(spec)
    missing, unexpected = model.load_state_dict({k: v for k, v in tensors.items()}, strict=False)
    tied = getattr(model.config, "tie_word_embeddings", False)
    if unexpected or [m for m in missing if not (tied and "lm_head" in m)]:
        raise RuntimeError(f"averaged weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Live:
    """dvclive metrics (rank 0 only). Rows are keyed by completed steps; on resume, rows logged after
    the checkpoint (by the killed process) are dropped first, so the log equals an uninterrupted one."""

    def __init__(self, directory: Path, step: int, enabled: bool):
        self.live = None
        if not enabled:
            return
        if step > 0:
            _truncate_tsv(directory, step)
        else:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)  # a run restarted from scratch logs from scratch
        from dvclive import Live

        self.live = Live(str(directory), resume=step > 0, save_dvc_exp=False, dvcyaml=None)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(f"train/{name}", value)
        self.live.next_step()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def _truncate_tsv(directory: Path, step: int) -> None:
    for path in (directory / "plots" / "metrics").rglob("*.tsv") if directory.exists() else []:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        at = header.index("step") if "step" in header else 0
        kept, last = [], 0
        for row in body:  # a row cut short by the kill is dropped; rows after the checkpoint are redone
            try:
                row_step = int(float(row[at]))
                float(row[-1])
            except (ValueError, IndexError):
                continue
            if len(row) == len(header) and last < row_step <= step:
                kept.append(row)
                last = row_step
        with open(path, "w", newline="") as handle:
            csv.writer(handle, delimiter="\t").writerows([header, *kept])


class _Reporter:
    """A Rich bar with ETA and tokens/s on a terminal; a line every 10% otherwise."""

    def __init__(self, name: str, total: int, start: int, enabled: bool):
        self.enabled = enabled
        self.total = total
        self.started = time.monotonic()
        self.start_step = start
        self.next_print = start + max(1, total // 10)
        self.progress = None
        if enabled and is_tty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn(f"[bold]{name}[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.progress.start()
            self.task = self.progress.add_task(name, total=total, completed=start, info="")
        elif enabled:
            print(f"{name}: {total} steps" + (f", resuming at step {start}" if start else ""), flush=True)
        self.name = name

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        info = f"loss {loss:.4f} · {tokens_per_s:,.0f} tok/s"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)
        elif step >= self.next_print or step == self.total:
            rate = (step - self.start_step) / max(time.monotonic() - self.started, 1e-9)
            eta = (self.total - step) / rate if rate else 0
            print(f"{self.name}: step {step}/{self.total} {info} · eta {eta:,.0f}s", flush=True)
            self.next_print = step + max(1, self.total // 10)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def train(spec: RunSpec, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train one run; the entry point of `midtrain train` and of each torchrun rank."""
    trainer = Trainer(spec, progress=progress)
    return trainer.fit(resume=resume)


def run_from_file(path: Path, resume: bool = True) -> dict[str, Any]:
    spec = RunSpec.load(path)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return train(spec, resume=resume)



