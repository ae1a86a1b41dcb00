"""What a run writes: a checkpoint every `checkpoint_every` steps, model snapshots after the `save_at`
steps (`out/at-step-<step>/model`), and at its end the final checkpoint, the final model and
summary.json. Reading checkpoints back, with every check and fallback, is midtrain/train/resume.py.
A run of several processes writes distributed checkpoints (midtrain/train/dcp.py) and exports its
final model from the last one (midtrain/train/export.py), never gathering it on one rank.

The final checkpoint (`checkpoints/step-<steps>`, the newest, so never pruned) is what a later run
with `optimizer_from` continues the optimizer state of."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from midtrain.io import remove_stale_temporaries, write_json
from midtrain.train import checkpoint as ckpt
from midtrain.train.distributed import all_reduce_sum
from midtrain.train.optim import parts

if TYPE_CHECKING:
    import torch

    from midtrain.train.loop import StepResult, Trainer


def state_dicts(trainer: Trainer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full (unsharded) model and optimizer state on the CPU; collective under FSDP: every rank calls it.
    A Muon run's two optimizers give one name-keyed state (Muon's groups, then AdamW's)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(trainer.model, parts(trainer.optimizer), options=options)


def save_model(trainer: Trainer, out: Path, extra: dict[str, Any]) -> None:
    """The model as it is now, an HF folder at `out` written atomically (rank 0); collective under FSDP."""
    from midtrain.train.model import save_pretrained, unsharded_copy, unwrapped

    if trainer.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = cast("dict[str, torch.Tensor]", get_model_state_dict(trainer.model, options=options))
        if trainer.dist.main:
            save_pretrained(unsharded_copy(trainer.spec, model_state), trainer.spec.tokenizer, out, extra)
    elif trainer.dist.main:
        save_pretrained(unwrapped(trainer.model), trainer.spec.tokenizer, out, extra)


def snapshot_dir(out: Path, step: int) -> Path:
    """Where the model snapshot after optimizer step `step` (RunSpec.save_at) is kept."""
    return out / f"at-step-{step}" / "model"


def has_snapshot(trainer: Trainer, step: int) -> bool:
    """Written atomically: present means complete."""
    return (snapshot_dir(trainer.out, step) / "config.json").is_file()


def save_snapshot(trainer: Trainer) -> None:
    """Keep the model after this step in out/at-step-<step>/model, unless it is there already: a run
    that resumes from before a snapshot reaches the same weights again and leaves it untouched."""
    present = has_snapshot(trainer, trainer.step) if trainer.dist.main else False
    if all_reduce_sum(1.0 if present else 0.0, trainer.dist):  # rank 0 decides for every rank
        return
    target = snapshot_dir(trainer.out, trainer.step)
    if trainer.dist.main:
        remove_stale_temporaries(target.parent)  # a write killed half-way leaves its temporary behind
    extra = {"run": trainer.spec.name, "steps": trainer.step, "tokens_seen": trainer.tokens_seen, "snapshot": True}
    save_model(trainer, target, extra)
    trainer.barrier()


def save_checkpoint(trainer: Trainer) -> None:
    """Model, optimizer, RNG and the callbacks' state (tensor files, or JSON in state.json): the
    single-file format on one process, the distributed one (midtrain/train/dcp.py) on several."""
    distributed = trainer.dist.world > 1
    # collective under FSDP: every rank calls it; a distributed checkpoint takes sharded state instead
    model_state, optimizer_state = ({}, {}) if distributed else state_dicts(trainer)
    state = {
        "tokens_seen": trainer.tokens_seen,
        "rng": ckpt.rng_state(),
        "run": trainer.spec.name,
        "parameters": trainer.parameters,
    }
    saved = [(callback, callback.on_checkpoint_save(trainer)) for callback in trainer.callbacks]
    files = {c.checkpoint_file: value for c, value in saved if c.checkpoint_file is not None and value}
    values = {c.name: value for c, value in saved if c.checkpoint_file is None and value is not None}
    state.update({"callbacks": values} if values else {})
    if distributed:
        from midtrain.train import dcp

        state.update({"strategy": trainer.strategy, "tokenizer": str(trainer.spec.tokenizer)})
        dcp.save_checkpoint(trainer, state, {dcp.callback_key(name): value for name, value in files.items()})
        return
    if trainer.dist.main:
        ckpt.save(
            trainer.checkpoint_dir,
            trainer.step,
            model_state,
            optimizer_state,
            state,
            files.get(ckpt.AVERAGES),
            trainer.spec.keep_last,
        )
    trainer.barrier()


def final_checkpoint(trainer: Trainer) -> Path:
    """The checkpoint of the run's last step (written before the final model)."""
    return trainer.checkpoint_dir / f"step-{trainer.step:07d}"


def save_final_model(trainer: Trainer, last: StepResult | None, resumed: bool) -> dict[str, Any]:
    """Save the final model to `out/model`; returns the run's summary, which the callbacks then complete."""
    extra = {"run": trainer.spec.name, "steps": trainer.step, "tokens_seen": trainer.tokens_seen}
    if trainer.dist.world > 1:  # streamed from the final distributed checkpoint, the ranks sharing the files
        from midtrain.train.export import export_in_run

        export_in_run(trainer, final_checkpoint(trainer), trainer.out / "model", "model", extra)
    else:
        save_model(trainer, trainer.out / "model", extra)
    summary = {
        "run": trainer.spec.name,
        "steps": trainer.step,
        "tokens_seen": trainer.tokens_seen,
        "parameters": trainer.parameters,
        "final_loss": last.loss if last else None,
        "tokens_per_s": 0.0,
        "resumed": resumed,  # tokens_per_s: callbacks/throughput.py
        "strategy": trainer.strategy,
        "world_size": trainer.dist.world,
    }
    return summary


def write_summary(trainer: Trainer, summary: dict[str, Any]) -> None:
    """summary.json, once the callbacks have added to it (throughput, metrics)."""
    if trainer.dist.main:
        write_json(trainer.out / "summary.json", summary)
    trainer.barrier()
