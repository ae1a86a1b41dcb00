"""Registry entries: named data sources, base models and scale profiles that recipes refer to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from midtrain.schema.base import Builtin, Category, Count, Family, Format, Slug, Strict


class DataSource(Strict):
    """A corpus a recipe can mix in. At tiny scale its `builtin` stand-in is used instead."""

    description: str
    category: Category
    format: Format = Format.raw
    synthetic: bool = False
    hub_id: str | None = Field(None, description="Hugging Face dataset id, e.g. allenai/dolmino-mix-1124.")
    subset: str | None = Field(None, description="Configuration name or data_dir within the dataset.")
    revision: str | None = Field(None, description="Pinned commit or tag of the dataset.")
    split: str = "train"
    text_field: str | None = Field("text", description="Column holding the document text.")
    template: str | None = Field(None, description="Python format string over row fields for QA/instruction rows.")
    files: list[str] | None = Field(None, description="Local files or globs (jsonl, parquet, txt) instead of a hub id.")
    license: str | None = None
    approx_tokens: Count | None = None
    builtin: Builtin = Field(description="Built-in corpus that stands in at tiny scale.")
    url: str | None = None

    @model_validator(mode="after")
    def _origin(self) -> DataSource:
        if self.template is None and self.text_field is None:
            raise ValueError("give text_field or template")
        return self


class TinyDims(Strict):
    hidden_size: int = Field(gt=0, le=4096)
    num_hidden_layers: int = Field(gt=0, le=64)
    num_attention_heads: int = Field(gt=0, le=64)
    num_key_value_heads: int = Field(gt=0, le=64)
    intermediate_size: int = Field(gt=0, le=16384)

    @model_validator(mode="after")
    def _heads(self) -> TinyDims:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class BaseModelEntry(Strict):
    description: str
    family: Family
    hub_id: str | None = None
    revision: str | None = None
    config_class: str = Field(description="transformers config class of the published model.")
    parameters: Count
    vocab_size: int = Field(gt=0, le=2_000_000)
    context_length: int = Field(gt=0)
    rope_theta: float = Field(gt=0)
    license: str | None = None
    layers: int | None = Field(None, gt=0, description="Published depth (for the attention term of compute estimates).")
    hidden_size: int | None = Field(
        None, gt=0, description="Published width (for the attention term of compute estimates)."
    )
    active_parameters: Count | None = Field(None, description="Parameters active per token (MoE).")
    tiny: TinyDims = Field(description="Dimensions of the tiny stand-in built at tiny scale.")


class ScaleProfile(Strict):
    """How a recipe is shrunk (or not) to run on given hardware."""

    description: str
    hardware: str
    model: str = Field(
        description="'stand-in' (a small model of the recipe's family) or 'published' (from_pretrained)."
    )
    dims: TinyDims | None = Field(None, description="Stand-in dimensions; default: the base model's `tiny` entry.")
    vocab_size: int | None = Field(None, gt=0, description="Tokenizer vocabulary trained at this scale (tiny).")
    base_context: int | None = Field(None, gt=0, description="Context of the tiny base; stages keep their ratio to it.")
    max_context: int | None = Field(None, gt=0)
    tokens_per_step: int | None = Field(None, gt=0)
    base_tokens: Count | None = Field(None, description="Tokens to pretrain the tiny base on.")
    mid_training_tokens: Count | None = Field(None, description="Total tokens across all mid-training stages.")
    max_runs: int | None = Field(None, ge=1)
    min_steps: int = Field(1, ge=1, description="No stage runs fewer steps than this (its share of tokens is raised).")
    peak_lr: float | None = Field(
        None, gt=0, description="Peak LR of the stand-in base; recipe LRs keep their ratio to the base's peak."
    )
    micro_batch_tokens: int | None = Field(None, gt=0, description="Tokens per forward pass and process.")
    eval_sequences: int | None = Field(None, gt=0, description="Held-out sequences per domain for evaluation.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "fp32",
        description="auto: bf16 where the hardware has it natively (GPU, or a CPU with avx512_bf16 / amx_bf16), else fp32.",
    )

    @model_validator(mode="after")
    def _model(self) -> ScaleProfile:
        if self.model not in ("stand-in", "published"):
            raise ValueError(f"model must be 'stand-in' or 'published', found {self.model!r}")
        return self


class Registry(Strict):
    sources: dict[Slug, DataSource]
    models: dict[Slug, BaseModelEntry]
    scales: dict[Slug, ScaleProfile]
