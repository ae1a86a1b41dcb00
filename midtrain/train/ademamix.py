"""AdEMAMix (Pagliardini, Ablin, Grangier 2024, "The AdEMAMix Optimizer: Better, Faster, Older").

Imported only when a run uses it (torch at import time)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def _ramp_alpha(step: int, alpha: float, warmup: int | None) -> float:
    """AdEMAMix's alpha, linear from 0 over the warmup."""
    return alpha * step / warmup if warmup and step < warmup else alpha


def _ramp_beta3(step: int, beta3: float, beta1: float, warmup: int | None) -> float:
    """AdEMAMix's beta3, from beta1 over the warmup, linear in the EMA's half-life (the paper's scheduler)."""
    if not warmup or step >= warmup:
        return beta3

    def half_life(beta: float) -> float:
        return math.log(0.5) / math.log(beta + 1e-8) - 1

    a = step / warmup
    return math.pow(0.5, 1 / ((1 - a) * half_life(beta1) + a * half_life(beta3) + 1))


class AdEMAMix(torch.optim.Optimizer):
    """AdEMAMix (Pagliardini, Ablin, Grangier 2024, Algorithm 1): Adam's bias-corrected fast EMA m1 plus
    alpha × a slow EMA m2 (beta3, no bias correction) over sqrt(v̂) + eps, with decoupled weight decay:

        θ ← θ − lr · ((m̂1 + α·m2) / (sqrt(v̂) + eps) + λ·θ)

    alpha and beta3 warm up over `warmup_steps` (alpha linearly from 0; beta3 from beta1, linearly in
    half-life), as in the authors' reference implementation."""

    def __init__(
        self,
        params: Any,
        lr: float,
        betas: tuple[float, float, float],
        alpha: float,
        warmup_steps: int | None = None,
        eps: float = 1e-8,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "alpha": alpha,
            "warmup_steps": warmup_steps,
            "eps": eps,
            "weight_decay": 0.0,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        with torch.no_grad():
            for group in self.param_groups:
                beta1, beta2, beta3_final = group["betas"]
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    state = self.state[param]
                    if not state:
                        state["step"] = torch.tensor(0.0)
                        state["exp_avg"] = torch.zeros_like(param)
                        state["exp_avg_slow"] = torch.zeros_like(param)
                        state["exp_avg_sq"] = torch.zeros_like(param)
                    state["step"] += 1
                    step = int(state["step"].item())
                    alpha = _ramp_alpha(step, group["alpha"], group["warmup_steps"])
                    beta3 = _ramp_beta3(step, beta3_final, beta1, group["warmup_steps"])
                    grad = param.grad
                    state["exp_avg"].lerp_(grad, 1 - beta1)
                    state["exp_avg_slow"].lerp_(grad, 1 - beta3)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denominator = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
                    update = state["exp_avg"] / (1 - beta1**step) + alpha * state["exp_avg_slow"]
                    update.div_(denominator).add_(param, alpha=group["weight_decay"])
                    param.add_(update, alpha=-group["lr"])
