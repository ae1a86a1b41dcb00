"""The optimizer of a run, built from the recipe's `Optimizer` settings.

- adamw / adam: the recipe's betas, eps and weight decay; no-decay groups (embeddings, norms, biases).
- muon: torch.optim.Muon on the hidden weight matrices (2-D parameters that are neither an embedding
  nor the output head) and AdamW, with the recipe's betas / eps / weight decay and no-decay groups, on
  everything else. The two are stepped together as one `MuonAdamW`; checkpoints hold both states,
  name-keyed, through DCP's multi-optimizer state dicts (`parts`).
  `muon.rms_match` r scales each matrix's update to r·sqrt(max(A, B)) × LR (Moonlight / Kimi K2,
  "Muon is Scalable for LLM Training", r = 0.2 matches AdamW's update RMS so AdamW's LR and weight
  decay carry over). torch implements exactly r = 0.2 (`adjust_lr_fn="match_rms_adamw"`); another r
  runs it with the LR scaled by r / 0.2 and the weight decay by 0.2 / r, which gives the same update
  and the same decoupled decay (LR × weight decay). Without rms_match torch's default ("original",
  Keller Jordan's sqrt(max(1, A / B))) applies and the schedule's LR is Muon's own.
- ademamix: AdEMAMix (midtrain/train/ademamix.py), Adam with a second, slow gradient EMA mixed in.

A parameter group may carry `lr_scale`: its LR is the schedule's times that (`set_lr`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError
from midtrain.schema.stage import Optimizer

if TYPE_CHECKING:
    import torch

BUILT_IN = ("adamw", "adam", "muon", "ademamix")
TORCH_RMS_MATCH = 0.2  # the update RMS torch's adjust_lr_fn="match_rms_adamw" scales to


def _embedding_ids(model: torch.nn.Module) -> tuple[set[int], int | None]:
    """(ids of every nn.Embedding weight, id of the output head's weight or None)."""
    import torch

    from midtrain.train.model import unwrapped

    inner = unwrapped(model)
    embedding_ids = {id(m.weight) for m in inner.modules() if isinstance(m, torch.nn.Embedding)}
    output = inner.get_output_embeddings()
    return embedding_ids, id(output.weight) if output is not None else None


def parameter_groups(
    model: torch.nn.Module, settings: Optimizer, exclude: Iterable[torch.nn.Parameter] = ()
) -> list[dict[str, Any]]:
    """Split parameters into decayed and non-decayed groups by what they are, not by name guessing alone
    (parameters in `exclude`, e.g. Muon's, are left out)."""
    from midtrain.train.model import unwrapped

    inner = unwrapped(model)
    embedding_ids, output_id = _embedding_ids(model)
    if output_id is not None and "embeddings" in settings.no_decay:
        embedding_ids.add(output_id)
    skip_ids = {id(p) for p in exclude}
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in inner.named_parameters():
        if not param.requires_grad or id(param) in skip_ids:
            continue
        is_norm = param.ndim == 1 and "norm" in name.lower()
        is_bias = name.endswith(".bias")
        skip = (
            ("embeddings" in settings.no_decay and id(param) in embedding_ids)
            or ("norms" in settings.no_decay and is_norm)
            or ("biases" in settings.no_decay and is_bias)
        )
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}] if decay else []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def muon_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The hidden weight matrices Muon trains: 2-D, trainable, neither an embedding nor the output head
    (a tied head is the embedding itself)."""
    from midtrain.train.model import unwrapped

    embedding_ids, output_id = _embedding_ids(model)
    excluded = embedding_ids | ({output_id} if output_id is not None else set())
    return [p for p in unwrapped(model).parameters() if p.requires_grad and p.ndim == 2 and id(p) not in excluded]


class MuonAdamW:
    """Muon on the hidden weight matrices and AdamW on the rest, stepped together.

    `param_groups` are Muon's groups, then AdamW's (the group dicts themselves: setting a group's LR
    sets it in its optimizer); `state` is both states (disjoint parameters); `parts` are the two
    optimizers, which DCP's get_state_dict / set_state_dict take as one (name-keyed, groups in this
    order)."""

    def __init__(self, *parts: torch.optim.Optimizer) -> None:
        self.parts: tuple[torch.optim.Optimizer, ...] = parts

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.parts for group in part.param_groups]

    @property
    def state(self) -> dict[Any, Any]:
        return {key: value for part in self.parts for key, value in part.state.items()}

    def step(self, closure: Callable[[], float] | None = None) -> None:
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)


if TYPE_CHECKING:
    AnyOptimizer = torch.optim.Optimizer | MuonAdamW


def parts(optimizer: AnyOptimizer) -> tuple[torch.optim.Optimizer, ...]:
    """The torch optimizers behind a run's optimizer (what DCP's state-dict functions take)."""
    return optimizer.parts if isinstance(optimizer, MuonAdamW) else (optimizer,)


def set_lr(optimizer: AnyOptimizer, lr: float) -> None:
    """The schedule's LR on every group, times the group's `lr_scale` where it has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr


def build_optimizer(model: torch.nn.Module, settings: Optimizer, lr: float, kernel: str = "foreach") -> AnyOptimizer:
    """The run's optimizer; `kernel` (fused / foreach / loop, see train/auto.py) picks AdamW's and
    Adam's implementation and is ignored by the others."""
    import torch

    if settings.type not in BUILT_IN:
        raise MidtrainError.single(
            f"optimizer {settings.type!r} is recorded in recipes but the built-in trainer does not run it",
            path="optimizer.type",
            expected=" / ".join(BUILT_IN),
            found=settings.type,
        )
    if settings.qk_clip is not None:
        raise MidtrainError.single(
            "optimizer.qk_clip (Kimi K2's QK-Clip) is recorded in recipes but the built-in trainer does not apply "
            "it; remove qk_clip from the run file to train without it",
            path="optimizer.qk_clip",
            expected="no qk_clip",
            found=f"tau {settings.qk_clip.tau:g}",
        )
    if settings.type == "muon":
        return build_muon(model, settings, lr)
    if settings.type == "ademamix":
        if settings.ademamix is None:
            raise MidtrainError.single(
                "optimizer type ademamix needs its settings", path="optimizer.ademamix", expected="alpha and beta3"
            )
        from midtrain.train.ademamix import AdEMAMix

        mix = settings.ademamix
        return AdEMAMix(
            parameter_groups(model, settings),
            lr=lr,
            betas=(*settings.betas, mix.beta3),
            alpha=mix.alpha,
            warmup_steps=mix.warmup_steps,
            eps=settings.eps,
        )
    groups = parameter_groups(model, settings)
    implementation = {"fused": {"fused": True}, "loop": {"foreach": False}}.get(kernel, {"foreach": True})
    if settings.type == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=settings.betas, eps=settings.eps, **implementation)
    return torch.optim.AdamW(groups, lr=lr, betas=settings.betas, eps=settings.eps, **implementation)


def build_muon(model: torch.nn.Module, settings: Optimizer, lr: float) -> MuonAdamW:
    import torch

    from midtrain.schema.stage import Muon

    muon = settings.muon or Muon()
    matrices = muon_parameters(model)
    if not matrices:
        raise MidtrainError.single(
            "optimizer type muon found no hidden weight matrices to train", path="optimizer.type", found="muon"
        )
    scale = 1.0
    adjust = "original"
    if muon.rms_match is not None:
        adjust, scale = "match_rms_adamw", muon.rms_match / TORCH_RMS_MATCH
    group = {"params": matrices, "weight_decay": settings.weight_decay / scale, "lr_scale": scale}
    muon_optimizer = torch.optim.Muon(
        [group],
        lr=lr * scale,
        momentum=muon.momentum,
        nesterov=muon.nesterov,
        ns_steps=muon.ns_steps,
        adjust_lr_fn=adjust,
    )
    rest = parameter_groups(model, settings, exclude=matrices)
    if not rest:
        return MuonAdamW(muon_optimizer)
    return MuonAdamW(
        muon_optimizer, torch.optim.AdamW(rest, lr=lr, betas=settings.betas, eps=settings.eps, foreach=True)
    )
