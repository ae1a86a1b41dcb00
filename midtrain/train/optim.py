"""AdamW with the recipe's betas, eps, weight decay and no-decay groups (embeddings, norms, biases)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midtrain.schema.stage import Optimizer

if TYPE_CHECKING:
    import torch


def parameter_groups(model: torch.nn.Module, settings: Optimizer) -> list[dict[str, Any]]:
    """Split parameters into decayed and non-decayed groups by what they are, not by name guessing alone."""
    import torch

    from midtrain.train.model import unwrapped

    inner = unwrapped(model)
    embedding_ids = {id(m.weight) for m in inner.modules() if isinstance(m, torch.nn.Embedding)}
    output = inner.get_output_embeddings()
    if output is not None and "embeddings" in settings.no_decay:
        embedding_ids.add(id(output.weight))
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in inner.named_parameters():
        if not param.requires_grad:
            continue
        is_norm = param.ndim == 1 and "norm" in name.lower()
        is_bias = name.endswith(".bias")
        skip = (
            ("embeddings" in settings.no_decay and id(param) in embedding_ids)
            or ("norms" in settings.no_decay and is_norm)
            or ("biases" in settings.no_decay and is_bias)
        )
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, settings: Optimizer, lr: float) -> torch.optim.Optimizer:
    import torch

    if settings.type not in ("adamw", "adam"):
        from midtrain.errors import MidtrainError

        raise MidtrainError.single(
            f"optimizer {settings.type!r} is recorded in recipes but the built-in trainer runs AdamW/Adam only; "
            "set optimizer.type to adamw in the run file (the tiny and small plans do this for you)"
        )
    groups = parameter_groups(model, settings)
    if settings.type == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=settings.betas, eps=settings.eps)
    return torch.optim.AdamW(groups, lr=lr, betas=settings.betas, eps=settings.eps, foreach=True)
