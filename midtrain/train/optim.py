"""AdamW with the recipe's betas, eps, weight decay and no-decay groups (embeddings, norms, biases)."""

from __future__ import annotations

from typing import Any

from midtrain.schema.stage import Optimizer


def parameter_groups(model: Any, settings: Optimizer) -> list[dict[str, Any]]:
    """Split parameters into decayed and non-decayed groups by what they are, not by name guessing alone."""
    import torch

    model = getattr(model, "module", model)  # DDP wraps; FSDP2 shards in place
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    output = model.get_output_embeddings()
    if output is not None and "embeddings" in settings.no_decay:
        embedding_ids.add(id(output.weight))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
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


def build_optimizer(model: Any, settings: Optimizer, lr: float) -> Any:
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
