"""RoPE / context settings of a stage: base change (ABF) and the scaling methods `transformers` knows."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from midtrain.schema.base import Strict


class _FactorScaling(Strict):
    factor: float = Field(gt=1, le=1024)
    original_max_position_embeddings: int | None = Field(None, gt=0)


class LinearScaling(_FactorScaling):
    """Position interpolation (Chen et al. 2023): positions divided by `factor`."""

    type: Literal["linear"] = "linear"


class DynamicNTK(_FactorScaling):
    """Dynamic NTK-aware scaling: the base grows with the sequence length at run time."""

    type: Literal["dynamic"] = "dynamic"


class Yarn(Strict):
    """YaRN (Peng et al. 2023). DeepSeek-V3 §4.3: s=40, α=1 (beta_slow), β=32 (beta_fast), √t=0.1·ln s+1."""

    type: Literal["yarn"] = "yarn"
    factor: float = Field(gt=1, le=1024)
    original_max_position_embeddings: int = Field(gt=0)
    beta_fast: float = Field(32.0, gt=0)
    beta_slow: float = Field(1.0, gt=0)
    attention_factor: float | None = Field(
        None, gt=0, description="Softmax temperature scale; default 0.1·ln(factor)+1."
    )
    mscale: float | None = Field(None, gt=0)
    mscale_all_dim: float | None = Field(None, ge=0)

    def effective_attention_factor(self) -> float:
        if self.attention_factor is not None:
            return self.attention_factor
        return 0.1 * math.log(self.factor) + 1.0


class Llama3Scaling(Strict):
    """Llama 3.1's frequency-dependent scaling (the released config's `rope_type: llama3`)."""

    type: Literal["llama3"] = "llama3"
    factor: float = Field(gt=1, le=1024)
    original_max_position_embeddings: int = Field(gt=0)
    low_freq_factor: float = Field(1.0, gt=0)
    high_freq_factor: float = Field(4.0, gt=0)


class NtkAlpha(Strict):
    """NTK-aware scaling with a fixed alpha (bloc97; Hunyuan-Large, Qwen-7B): the RoPE base becomes
    θ · α^(d / (d − 2)) for head dimension d; nothing else changes. `to_hf` writes that base."""

    type: Literal["ntk-alpha"] = "ntk-alpha"
    alpha: float = Field(gt=1, le=1e6)

    def theta_for(self, theta: float, head_dim: int) -> float:
        return theta * self.alpha ** (head_dim / (head_dim - 2)) if head_dim > 2 else theta * self.alpha


Scaling = Annotated[LinearScaling | DynamicNTK | Yarn | Llama3Scaling | NtkAlpha, Field(discriminator="type")]


class Rope(Strict):
    """RoPE settings in force during a stage. Absent fields keep the previous stage's (or base's) value."""

    theta: float | None = Field(None, gt=0, le=1e12, description="RoPE base; changing it is ABF (Xiong et al. 2023).")
    scaling: Scaling | None = None
    applies_to: str | None = Field(
        None, description="Where RoPE scaling acts if not everywhere (e.g. MLA's decoupled key)."
    )

    def method(self, previous_theta: float | None = None) -> str:
        parts = []
        if self.theta is not None and (previous_theta is None or self.theta != previous_theta):
            parts.append("abf")
        if self.scaling is not None:
            parts.append(self.scaling.type)
        return "+".join(parts) or "unchanged"

    def capacity(self, base_context: int | None) -> int | None:
        """Longest sequence the scaling is designed for, or None when it does not bound it."""
        if self.scaling is None or isinstance(self.scaling, (DynamicNTK, NtkAlpha)):
            return None
        original = getattr(self.scaling, "original_max_position_embeddings", None) or base_context
        if original is None:
            return None
        return round(original * self.scaling.factor)

    def to_hf(self, theta: float, head_dim: int | None = None) -> dict[str, Any]:
        """`transformers` rope parameters (`rope_parameters` in v5, `rope_scaling` before).

        NTK-alpha is a change of base, so it becomes a plain RoPE with θ · α^(d/(d−2)) (needs head_dim)."""
        params: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
        if isinstance(self.scaling, NtkAlpha):
            if head_dim is None:
                raise ValueError("NTK-alpha scaling needs the model's head dimension")
            return {"rope_type": "default", "rope_theta": self.scaling.theta_for(theta, head_dim)}
        if self.scaling is not None:
            params.update(self.scaling.model_dump(exclude_none=True, exclude={"type"}))
            params["rope_type"] = self.scaling.type
        return params

    def describe(self, previous_theta: float | None = None) -> str:
        bits = []
        if self.theta is not None:
            if previous_theta is not None and previous_theta != self.theta:
                bits.append(f"θ {previous_theta:,.0f} → {self.theta:,.0f} (ABF ×{self.theta / previous_theta:g})")
            else:
                bits.append(f"θ {self.theta:,.0f}")
        s = self.scaling
        if s is not None:
            if s.type == "yarn":
                bits.append(
                    f"YaRN ×{s.factor:g} from {s.original_max_position_embeddings:,}, β_fast {s.beta_fast:g}, "
                    f"β_slow {s.beta_slow:g}, attention ×{s.effective_attention_factor():.4g}"
                )
            elif s.type == "ntk-alpha":
                bits.append(f"NTK-aware α {s.alpha:g} (base × α^(d/(d−2)))")
            elif s.type == "llama3":
                bits.append(
                    f"llama3 ×{s.factor:g} from {s.original_max_position_embeddings:,} "
                    f"(low {s.low_freq_factor:g}, high {s.high_freq_factor:g})"
                )
            else:
                origin = f" from {s.original_max_position_embeddings:,}" if s.original_max_position_embeddings else ""
                bits.append(f"{'PI' if s.type == 'linear' else 'dynamic NTK'} ×{s.factor:g}{origin}")
        if self.applies_to:
            bits.append(f"on {self.applies_to}")
        return "; ".join(bits) or "unchanged"
