"""Per-layer layout of the model: which layers attend fully, through a sliding window, in chunks, without
RoPE (NoPE), or are not attention at all (Mamba, linear attention). Gemma 3, Llama 4, Olmo 3, SmolLM3 and
the hybrid Nemotron-H / Falcon-H1 models differ here, and a long-context stage often changes only the
RoPE of the full-attention layers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from midtrain.schema.base import Strict

LayerKind = Literal["full", "sliding", "chunked", "nope", "linear", "mamba", "mamba+attention"]
LAYER_KINDS: tuple[str, ...] = ("full", "sliding", "chunked", "nope", "linear", "mamba", "mamba+attention")


class Attention(Strict):
    """`pattern` repeats from the first layer (Gemma 3: five sliding, then one full)."""

    pattern: list[LayerKind] = Field(min_length=1, max_length=1024)
    layers: int | None = Field(None, gt=0, le=100_000, description="Layers in all; default: the base model's.")
    last: LayerKind | None = Field(None, description="The last layer's kind when it breaks the pattern (Olmo 3: full).")
    sliding_window: int | None = Field(None, gt=0, description="Tokens a sliding-window layer sees.")
    chunk_size: int | None = Field(None, gt=0, description="Tokens per chunk of a chunked-attention layer (Llama 4).")
    local_rope_theta: float | None = Field(
        None, gt=0, description="RoPE base of the sliding/chunked layers when it differs from the global one."
    )
    note: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Attention:
        kinds = {*self.pattern, *([self.last] if self.last else [])}
        if "sliding" in kinds and self.sliding_window is None:
            raise ValueError("sliding layers need sliding_window")
        if "chunked" in kinds and self.chunk_size is None:
            raise ValueError("chunked layers need chunk_size")
        return self

    def layer_kinds(self, layers: int) -> list[str]:
        """The kind of each of `layers` layers: the pattern repeated, then `last`."""
        kinds: list[str] = [self.pattern[i % len(self.pattern)] for i in range(layers)]
        if self.last and kinds:
            kinds[-1] = self.last
        return kinds

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for kind in self.pattern:
            counts[kind] = counts.get(kind, 0) + 1
        parts = [f"{n} {kind}" for kind, n in counts.items()]
        text = " : ".join(parts) + " per " + str(len(self.pattern)) + " layers"
        if self.sliding_window:
            text += f", window {self.sliding_window:,}"
        if self.chunk_size:
            text += f", chunks of {self.chunk_size:,}"
        if self.last:
            text += f", last layer {self.last}"
        if self.local_rope_theta:
            text += f", local θ {self.local_rope_theta:,.0f}"
        return text
