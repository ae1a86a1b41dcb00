"""Resuming a run from the newest usable checkpoint in `out/checkpoints`.

Nothing in a checkpoint is trusted: one that does not verify, cannot be read, disagrees with this
run (more steps than the run has, another model, another optimizer layout, callback state that
does not fit, e.g. other averages) or fails to apply is reported with a warning and the previous
one is tried; with none usable the run starts afresh. Every rank reads the same files and the
ranks agree on each decision, so all of them resume from the same checkpoint (or none). A
checkpoint that fails half-way through being applied leaves nothing behind: with no other to fall
back to, the initial weights, a fresh optimizer, the initial callback state and RNG are restored.

`carry_optimizer` starts a run that does not resume from the final optimizer state of an earlier
run (RunSpec.optimizer_from): its last checkpoint's optimizer, checked against this run's groups,
parameters, shapes and state kinds; the hyper-parameters (LR, betas, weight decay, ...) stay this
run's own.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from midtrain.errors import MidtrainError, short
from midtrain.train import checkpoint as ckpt
from midtrain.train.distributed import Dist, all_reduce_sum
from midtrain.train.optim import parts, set_lr

if TYPE_CHECKING:
    from midtrain.train.callbacks import Callback
    from midtrain.train.loop import Trainer

# model tensors, optimizer state, state.json, tensor files by name (e.g. averages.safetensors)
Loaded = tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]


def resume(trainer: Trainer) -> bool:
    """Continue from the newest usable checkpoint; False (and the initial state) when there is none."""
    directory, dist = trainer.checkpoint_dir, trainer.dist
    ckpt.clean_partial(directory) if dist.main else None
    trainer.barrier()
    candidates = list(reversed(ckpt.list_checkpoints(directory)))
    same_on_every_rank([p.name for p in candidates], dist, directory)
    if not candidates:
        return False
    initial_rng = ckpt.rng_state()
    touched = False  # whether a failed attempt may have changed the model, optimizer or callbacks
    for path in candidates:
        problem, applied = _attempt(trainer, path)
        touched = touched or applied
        if problem is None:
            return True
        warnings.warn(f"skipping checkpoint {path}: {problem}; falling back to the previous one", stacklevel=3)
    warnings.warn(f"no usable checkpoint in {directory}; starting from scratch", stacklevel=3)
    if touched:
        reset_to_initial(trainer, initial_rng)
    return False


def _attempt(trainer: Trainer, path: Path) -> tuple[str | None, bool]:
    """(what went wrong on any rank, or None; whether applying was attempted) for one checkpoint."""
    if ckpt.is_dcp(path):
        return _attempt_dcp(trainer, path)
    loaded, problem = None, ckpt.verify(path)
    if problem is None:
        try:
            loaded = read_checkpoint(trainer, path)
        except Exception as exc:
            problem = problem_text(exc, path)
    problem = agree(problem, trainer.dist)
    if problem is not None:
        return problem, False
    assert loaded is not None
    try:
        apply_checkpoint(trainer, loaded)
    except Exception as exc:
        problem = problem_text(exc, path)
    return agree(problem, trainer.dist), True


def _attempt_dcp(trainer: Trainer, path: Path) -> tuple[str | None, bool]:
    """A distributed checkpoint (midtrain/train/dcp.py), on any number of ranks: verified with the
    ranks sharing the hashing, checked against this run, then read (each rank its own chunks) and
    applied. Building this run's state dict may initialise the optimizer's state, so a failure here
    always counts as having touched the run."""
    dist = trainer.dist
    problem = agree(ckpt.verify(path, share=(dist.rank, dist.world)), dist)
    if problem is not None:
        return problem, False
    try:
        state, template, own = read_dcp_checkpoint(trainer, path)
    except Exception as exc:
        problem = problem_text(exc, path)
    problem = agree(problem, dist)
    if problem is not None:
        return problem, True
    try:
        apply_dcp_checkpoint(trainer, path, state, template, own)
    except Exception as exc:
        problem = problem_text(exc, path)
    return agree(problem, dist), True


def read_dcp_checkpoint(trainer: Trainer, path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(state.json, this run's state dict to load into, this rank's own state), all checked: the
    run's bounds and model, DCP's metadata against this run's state (names, shapes, dtypes), the
    rank file this rank resumes from. Reads no tensor."""
    from midtrain.train import dcp

    state = ckpt.read_state(path)
    _check_run(trainer, state, path)
    templates = {}
    for callback in trainer.callbacks:
        if callback.checkpoint_file is not None:
            tensors = callback.checkpoint_template(trainer, state["step"])
            if tensors:
                templates[dcp.callback_key(callback.checkpoint_file)] = tensors
    template = dcp.state_dict(trainer, templates)
    dcp.check_layout(path, dcp.read_metadata(path), template)
    own = dcp.rank_state(path, state, trainer.dist.rank)
    return state, template, own


def apply_dcp_checkpoint(
    trainer: Trainer, path: Path, state: dict[str, Any], template: dict[str, Any], own: dict[str, Any]
) -> None:
    """Load the tensors into this run's state (collective), check the callbacks' states, then apply
    them, this rank's RNG, the step and the tokens seen."""
    from midtrain.train import dcp

    dcp.load_into(trainer, path, template)
    files = {
        c.checkpoint_file: template.get(dcp.callback_key(c.checkpoint_file)) or None
        for c in trainer.callbacks
        if c.checkpoint_file is not None
    }
    for callback in trainer.callbacks:
        file = path / (ckpt.DCP_METADATA if callback.checkpoint_file else "state.json")
        callback.check_state(trainer, callback_state(callback, state, files), state["step"], file)
    for callback in trainer.callbacks:
        callback.on_checkpoint_load(trainer, callback_state(callback, state, files))
    ckpt.set_rng_state(own["rng"])
    trainer.step = state["step"]
    trainer.tokens_seen = state["tokens_seen"]


def _check_run(trainer: Trainer, state: dict[str, Any], path: Path) -> None:
    """A checkpoint's state.json against this run: not past its end, of this model's size."""
    if state["step"] > trainer.spec.steps:
        raise MidtrainError.single(
            "checkpoint is beyond the end of this run",
            file=path,
            expected=f"at most {trainer.spec.steps} steps",
            found=f"step {state['step']}",
        )
    if state.get("parameters") not in (None, trainer.parameters):
        raise MidtrainError.single(
            "checkpoint does not match this model",
            file=path,
            expected=f"{trainer.parameters:,} parameters",
            found=f"{state['parameters']:,}",
        )


def read_checkpoint(trainer: Trainer, path: Path) -> Loaded:
    """Load a checkpoint and check it against this run, model and callbacks; changes nothing."""
    from midtrain.train.model import unwrapped

    model_state, optimizer_state, state, averages = ckpt.load(path)
    files = {ckpt.AVERAGES: averages} if averages is not None else {}
    _check_run(trainer, state, path)
    inner = unwrapped(trainer.model)
    expected = {name: tuple(t.shape) for name, t in inner.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in model_state.items()}
    if found != expected:
        raise MidtrainError.single(
            "checkpoint does not match this model",
            file=path / "model.safetensors",
            expected=shape_summary(expected, found),
            found=shape_summary(found, expected),
        )
    check_optimizer_state(trainer, optimizer_state, path / "optimizer.pt")
    _check_callback_states(trainer, state, files, path)
    return model_state, optimizer_state, state, files


def check_optimizer_state(trainer: Trainer, optimizer_state: dict[str, Any], file: Path, what: str = "") -> None:
    """The saved optimizer state must have this optimizer's groups, parameters and shapes."""
    from midtrain.train.model import named_parameters

    names = {id(param): name for name, param in named_parameters(trainer.model)}
    shapes = {name: tuple(param.shape) for name, param in named_parameters(trainer.model)}
    groups = [[names[id(param)] for param in group["params"]] for group in trainer.optimizer.param_groups]
    saved = [group["params"] for group in optimizer_state["param_groups"]]
    if saved != groups:
        raise MidtrainError.single(
            f"optimizer state does not match this model's parameter groups{what}",
            file=file,
            expected=f"{len(groups)} groups of {[len(g) for g in groups]} parameters",
            found=f"{len(saved)} groups of {[len(g) if isinstance(g, list) else g for g in saved]} parameters",
        )
    for name, entry in optimizer_state["state"].items():
        if name not in shapes:
            raise MidtrainError.single(f"optimizer state holds an unknown parameter {short(name)}{what}", file=file)
        for key, value in entry.items():
            if getattr(value, "ndim", 0) and tuple(value.shape) != shapes[name]:
                raise MidtrainError.single(
                    f"optimizer state {name}.{key} has the wrong shape{what}",
                    file=file,
                    expected=str(shapes[name]),
                    found=str(tuple(value.shape)),
                )


def callback_state(callback: Callback, state: dict[str, Any], files: dict[str, Any]) -> Any:
    """A callback's saved state: its tensor file's tensors, or its entry under state.json's "callbacks"."""
    if callback.checkpoint_file is not None:
        return files.get(callback.checkpoint_file)
    saved = state.get("callbacks")
    return saved.get(callback.name) if isinstance(saved, dict) else None


def _check_callback_states(trainer: Trainer, state: dict[str, Any], files: dict[str, Any], path: Path) -> None:
    kept = {callback.checkpoint_file for callback in trainer.callbacks}
    for name in files:
        if name not in kept:
            raise MidtrainError.single("checkpoint holds state that no callback of this run keeps", file=path / name)
    for callback in trainer.callbacks:
        file = path / (callback.checkpoint_file or "state.json")
        callback.check_state(trainer, callback_state(callback, state, files), state["step"], file)


def apply_checkpoint(trainer: Trainer, loaded: Loaded) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    model_state, optimizer_state, state, files = loaded
    set_state_dict(
        trainer.model,
        parts(trainer.optimizer),
        model_state_dict=model_state,
        optim_state_dict=optimizer_state,
        options=StateDictOptions(full_state_dict=True),
    )
    for callback in trainer.callbacks:
        callback.on_checkpoint_load(trainer, callback_state(callback, state, files))
    ckpt.set_rng_state(state["rng"])
    trainer.step = state["step"]
    trainer.tokens_seen = state["tokens_seen"]


def reset_to_initial(trainer: Trainer, rng: dict[str, Any]) -> None:
    """Undo a failed attempt to apply a checkpoint: the initial weights, a fresh optimizer, the
    callbacks' initial state and the RNG as it was."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from midtrain.train.model import load_model
    from midtrain.train.optim import build_optimizer

    set_model_state_dict(
        trainer.model, load_model(trainer.spec).state_dict(), options=StateDictOptions(full_state_dict=True)
    )
    trainer.optimizer = build_optimizer(
        trainer.model, trainer.spec.optimizer, lr=trainer.lr(0), kernel=str(trainer.spec.optimizer_kernel)
    )
    for callback in trainer.callbacks:
        callback.on_checkpoint_load(trainer, None)
    ckpt.set_rng_state(rng)
    trainer.step = 0
    trainer.tokens_seen = 0


def carry_optimizer(trainer: Trainer) -> None:
    """Load the final optimizer state of the run in `spec.optimizer_from` into this run's fresh optimizer.

    Every problem is a MidtrainError naming the field and the file: a carried state that does not fit
    (another model after an upscale, other no-decay groups, another optimizer type) is never applied."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    source = Path(str(trainer.spec.optimizer_from))
    checkpoint = final_checkpoint(source)
    if ckpt.is_dcp(checkpoint):
        carry_dcp_optimizer(trainer, checkpoint, source)
        return
    file = checkpoint / "optimizer.pt"
    saved = ckpt.load_optimizer(checkpoint)
    what = f" (optimizer_from: the final optimizer state of {source})"
    check_optimizer_state(trainer, saved, file, what)
    optimizers = parts(trainer.optimizer)
    # the kinds of state each parameter has (exp_avg, momentum_buffer, ...): from a fresh state, which
    # DCP makes with a zero-gradient step at LR 0 (as set_optimizer_state_dict does before loading);
    # local (sharded) tensors suffice for the names
    local = get_optimizer_state_dict(trainer.model, optimizers, options=StateDictOptions())["state"]
    fresh: dict[str, list[str]] = {
        name: sorted(entry) for name, entry in cast("dict[str, dict[str, Any]]", local).items()
    }
    missing = sorted(set(fresh) - set(saved["state"]))
    if missing:
        raise MidtrainError.single(
            f"optimizer state lacks the state of {len(missing)} parameters{what}",
            file=file,
            path="optimizer_from",
            expected=f"state for every trained parameter, e.g. {missing[0]}",
            found=f"{len(saved['state'])} of {len(fresh)}",
        )
    for name, entry in saved["state"].items():
        if sorted(entry) != fresh.get(name, []):
            raise MidtrainError.single(
                f"optimizer state of another optimizer type{what}",
                file=file,
                path="optimizer_from",
                expected=f"{name}: {', '.join(fresh.get(name, []))} (optimizer.type {trainer.spec.optimizer.type})",
                found=f"{name}: {', '.join(sorted(entry))}",
            )
    settings = [{k: v for k, v in group.items() if k != "params"} for group in trainer.optimizer.param_groups]
    set_optimizer_state_dict(trainer.model, optimizers, saved, options=StateDictOptions(full_state_dict=True))
    for group, own in zip(trainer.optimizer.param_groups, settings, strict=True):
        group.update(own)  # this run's hyper-parameters; only the state (moments, step counts) is carried
    set_lr(trainer.optimizer, trainer.lr(trainer.step))


def carry_dcp_optimizer(trainer: Trainer, checkpoint: Path, source: Path) -> None:
    """carry_optimizer from a distributed run's final (DCP) checkpoint, on any number of ranks: the
    same parameters with the same kinds of state and shapes, or a MidtrainError; only the state
    (`optimizer.state.*`) is read, each rank its own chunks; the groups' settings stay this run's."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    from midtrain.train import dcp

    what = f" (optimizer_from: the final optimizer state of {source})"
    dist = trainer.dist
    problem = agree(ckpt.verify(checkpoint, share=(dist.rank, dist.world)), dist)
    if problem is not None:
        raise MidtrainError.single(f"checkpoint is not usable: {problem}{what}", file=checkpoint, path="optimizer_from")
    ckpt.read_state(checkpoint)
    metadata = dcp.read_metadata(checkpoint)
    optimizers = parts(trainer.optimizer)
    # this run's flattened state; DCP initialises it (a zero-gradient step at LR 0) to name its kinds
    mine = cast("dict[str, Any]", get_optimizer_state_dict(trainer.model, optimizers, options=dcp.options()))
    wanted = {key: value for key, value in mine.items() if key.startswith("state.")}
    saved = {key[len("optimizer.") :] for key in metadata.state_dict_metadata if key.startswith("optimizer.state.")}
    if set(wanted) != saved:
        kinds = _kinds_by_parameter(set(wanted)), _kinds_by_parameter(saved)
        differ = sorted(name for name in set(kinds[0]) | set(kinds[1]) if kinds[0].get(name) != kinds[1].get(name))
        name = differ[0] if differ else "?"
        raise MidtrainError.single(
            f"optimizer state of other parameters or another optimizer type{what}",
            file=checkpoint / ckpt.DCP_METADATA,
            path="optimizer_from",
            expected=f"{name}: {', '.join(kinds[0].get(name, ['no state']))} (optimizer.type {trainer.spec.optimizer.type})",
            found=f"{name}: {', '.join(kinds[1].get(name, ['no state']))}",
        )
    template = {"optimizer": wanted}
    dcp.check_layout(checkpoint, metadata, template, only="optimizer.state.")
    dcp.load(template, checkpoint, dist=dist.world > 1)
    set_optimizer_state_dict(trainer.model, optimizers, {**mine, **template["optimizer"]}, options=dcp.options())
    set_lr(trainer.optimizer, trainer.lr(trainer.step))


def _kinds_by_parameter(keys: set[str]) -> dict[str, list[str]]:
    """`state.<name>.<kind>` keys -> {name: sorted kinds}."""
    out: dict[str, list[str]] = {}
    for key in keys:
        name, _, kind = key[len("state.") :].rpartition(".")
        out.setdefault(name, []).append(kind)
    return {name: sorted(kinds) for name, kinds in out.items()}


def final_checkpoint(run: Path) -> Path:
    """The last checkpoint of a finished run directory (its summary.json's steps), or a MidtrainError."""
    import json

    def bad(message: str, file: Path) -> MidtrainError:
        return MidtrainError.single(message, file=file, path="optimizer_from")

    if not run.is_dir():
        raise bad("optimizer_from: run directory not found", run)
    summary_file = run / "summary.json"
    try:
        summary = json.loads(summary_file.read_text())
    except FileNotFoundError:
        raise bad("optimizer_from: the run has not finished (no summary.json); finish it first", summary_file) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise bad(f"optimizer_from: summary.json is not readable: {str(exc)[:200]}", summary_file) from None
    steps = summary.get("steps") if isinstance(summary, dict) else None
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise bad(f"optimizer_from: summary.json has no step count (found {short(steps)})", summary_file)
    checkpoint = run / "checkpoints" / f"step-{steps:07d}"
    if not checkpoint.is_dir():
        raise MidtrainError.single(
            "optimizer_from: the run's final checkpoint, which holds its optimizer state, is missing",
            file=checkpoint,
            path="optimizer_from",
            expected=f"checkpoints/step-{steps:07d} (the run's {steps} steps)",
            found=", ".join(p.name for p in ckpt.list_checkpoints(run / "checkpoints")) or "no checkpoints",
        )
    return checkpoint


def agree(problem: str | None, dist: Dist) -> str | None:
    """The same decision on every rank: a checkpoint that failed on any rank is skipped by all."""
    if dist.world == 1:
        return problem
    failures = all_reduce_sum(0.0 if problem is None else 1.0, dist)
    if problem is None and failures:
        return f"it could not be loaded on {int(failures)} other rank(s)"
    return problem


def same_on_every_rank(names: list[str], dist: Dist, directory: Path) -> None:
    """Every rank must see the same checkpoints (a shared output directory), or they would diverge."""
    if dist.world == 1:
        return
    import zlib

    import torch

    digest = zlib.crc32("\n".join(names).encode())
    values = torch.tensor([len(names), -len(names), digest, -digest], dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
    if values[0] != -values[1] or values[2] != -values[3]:
        raise MidtrainError.single(
            "the ranks see different checkpoints; the output directory must be shared by every process",
            file=directory,
        )


def problem_text(exc: BaseException, checkpoint: Path) -> str:
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


def shape_summary(these: dict[str, tuple[int, ...]], others: dict[str, tuple[int, ...]]) -> str:
    """Where `these` tensors differ from `others`: a few names, with shapes (for error messages)."""
    differ = [f"{name} {list(shape)}" for name, shape in these.items() if others.get(name) != shape]
    extra = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
    return f"{len(these)} tensors" + (f", e.g. {', '.join(differ[:3])}{extra}" if differ else "")
