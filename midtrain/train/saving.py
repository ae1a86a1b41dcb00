"""What a run writes: a checkpoint every `checkpoint_every` steps, and at its end the final model and
summary.json. Reading checkpoints back, with every check and fallback, is midtrain/train/resume.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midtrain.io import write_json
from midtrain.train import checkpoint as ckpt

if TYPE_CHECKING:
    from midtrain.train.loop import StepResult, Trainer


def state_dicts(trainer: Trainer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full (unsharded) model and optimizer state on the CPU; collective under FSDP: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(trainer.model, trainer.optimizer, options=options)


def save_checkpoint(trainer: Trainer) -> None:
    """Model, optimizer, RNG and the callbacks' state (tensor files, or JSON in state.json)."""
    model_state, optimizer_state = state_dicts(trainer)  # collective under FSDP: every rank calls it
    state = {
        "tokens_seen": trainer.tokens_seen,
        "rng": ckpt.rng_state(),
        "run": trainer.spec.name,
        "parameters": trainer.parameters,
    }
    saved = [(callback, callback.on_checkpoint_save(trainer)) for callback in trainer.callbacks]
    if trainer.dist.main:
        files = {c.checkpoint_file: value for c, value in saved if c.checkpoint_file is not None and value}
        values = {c.name: value for c, value in saved if c.checkpoint_file is None and value is not None}
        state.update({"callbacks": values} if values else {})
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


def save_final_model(trainer: Trainer, last: StepResult | None, resumed: bool) -> dict[str, Any]:
    """Save the final model to `out/model`; returns the run's summary, which the callbacks then complete."""
    from midtrain.train.model import save_pretrained, unsharded_copy, unwrapped

    model_state, _ = state_dicts(trainer)
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
    if trainer.dist.main:
        inner = unsharded_copy(trainer.spec, model_state) if trainer.strategy == "fsdp" else unwrapped(trainer.model)
        extra = {"run": trainer.spec.name, "steps": trainer.step, "tokens_seen": trainer.tokens_seen}
        save_pretrained(inner, trainer.spec.tokenizer, trainer.out / "model", extra)
    return summary


def write_summary(trainer: Trainer, summary: dict[str, Any]) -> None:
    """summary.json, once the callbacks have added to it (throughput, metrics)."""
    if trainer.dist.main:
        write_json(trainer.out / "summary.json", summary)
    trainer.barrier()
