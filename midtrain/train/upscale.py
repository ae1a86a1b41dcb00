"""Depth up-scaling (model growth): a deeper model whose decoder layers are copies of [start, end)
ranges of a saved model's layers, concatenated (SOLAR's depth up-scaling: [[0, 24], [8, 32]]).

The embeddings, the final norm and the LM head are kept; every copied layer keeps its kind (the
config's per-layer lists, e.g. `layer_types` and `no_rope_layers`, are picked from the source
layers) and gets its new position as `layer_idx`. The result is an ordinary model of its family:
its config says the new depth, so `from_pretrained` loads a saved copy as it is.

The trainer up-scales once, when it builds the model from `init`; a resumed run builds the same
up-scaled model and then loads the checkpoint's weights into it (midtrain/train/resume.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

# Config attributes that hold one entry per decoder layer (transformers' names).
PER_LAYER_LISTS = ("layer_types", "no_rope_layers")


def source_layers(ranges: list[tuple[int, int]], layers: int, source: str | Path | None = None) -> list[int]:
    """The source layer of each new layer, checked against the `layers` the init model has."""
    for start, end in ranges:
        if not 0 <= start < end:
            raise MidtrainError.single(
                "upscale range is empty or negative",
                path="upscale",
                expected="[start, end) with 0 ≤ start < end",
                found=f"[{start}, {end})",
            )
        if end > layers:
            where = f" ({source})" if source is not None else ""
            raise MidtrainError.single(
                f"upscale range [{start}, {end}) exceeds the init model's {layers} decoder layers{where}",
                path="upscale",
                expected=f"ranges within [0, {layers})",
                found=f"[{start}, {end})",
            )
    return [index for start, end in ranges for index in range(start, end)]


def upscaled_config(
    config: PretrainedConfig, ranges: list[tuple[int, int]], source: str | Path | None = None
) -> PretrainedConfig:
    """A copy of `config` with the up-scaled depth and per-layer lists (nothing allocated)."""
    picked = source_layers(ranges, config.num_hidden_layers, source)
    new = copy.deepcopy(config)
    _set_depth(new, config, picked)
    return new


def upscale(model: PreTrainedModel, ranges: list[tuple[int, int]], source: str | Path | None = None) -> PreTrainedModel:
    """Replace `model`'s decoder layers by deep copies of the given ranges (in place; returns it)."""
    import torch

    config = model.config
    layers = decoder_layers(model)
    picked = source_layers(ranges, len(layers), source)
    original = copy.deepcopy(config)
    grown = []
    for new_index, old_index in enumerate(picked):
        layer = copy.deepcopy(layers[old_index], memo={id(config): config})  # modules keep sharing the config
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index  # type: ignore[assignment]
        grown.append(layer)
    layers_owner, attribute = _owner(model, layers)
    setattr(layers_owner, attribute, torch.nn.ModuleList(grown))
    _set_depth(config, original, picked)
    base = getattr(model, "base_model", None)
    if base is not None and hasattr(base, "has_sliding_layers"):  # qwen2/qwen3/smollm3 build a sliding mask only if so
        base.has_sliding_layers = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    _check_describes(model)
    return model


def _check_describes(model: PreTrainedModel) -> None:
    """The new config must build the same network (what `from_pretrained` of a saved copy does): a
    config with layer patterns this module does not carry over (e.g. which layers are MoE) would not."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(copy.deepcopy(model.config))
    expected = {name: tuple(t.shape) for name, t in fresh.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if expected != found:
        differ = sorted(set(expected.items()) ^ set(found.items()))
        raise MidtrainError.single(
            f"cannot up-scale this {model.config.model_type} model: its config cannot describe the repeated "
            "layers (a per-layer pattern, e.g. which layers are mixture-of-experts, would not carry over)",
            path="upscale",
            expected="a dense model whose layers differ only as layer_types / no_rope_layers say",
            found=f"{len(differ)} tensors differ, e.g. {differ[0][0]}",
        )


def decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM: `model.model.layers` in the transformers families midtrain
    trains, else the one ModuleList of `num_hidden_layers` blocks."""
    import torch

    count = model.config.num_hidden_layers
    layers = getattr(getattr(model, "model", None), "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and len(layers) == count:
        return layers
    found = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count]
    if len(found) != 1:
        raise MidtrainError.single(
            f"cannot up-scale a {type(model).__name__}: its decoder layers are not one list of "
            f"num_hidden_layers = {count} blocks",
            path="upscale",
            expected="a model with model.layers (llama, qwen2, qwen3, olmo2, olmo3, smollm3, ...)",
            found=f"{len(found)} candidate lists",
        )
    return found[0]


def _owner(model: torch.nn.Module, target: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    for module in model.modules():
        for name, child in module.named_children():
            if child is target:
                return module, name
    raise AssertionError("decoder layers not found in the model")  # decoder_layers found them there


def _set_depth(config: Any, original: Any, picked: list[int]) -> None:
    """Set the depth and the per-layer lists of `config` from `original`'s, picked per source layer."""
    lists = {}
    for name in PER_LAYER_LISTS:
        value = getattr(original, name, None)
        if value is None:
            continue
        if len(value) != original.num_hidden_layers:
            raise MidtrainError.single(
                f"cannot up-scale: the init model's config {name} does not have one entry per layer",
                path="upscale",
                expected=f"{original.num_hidden_layers} entries",
                found=f"{len(value)}",
            )
        lists[name] = [value[index] for index in picked]
    config.num_hidden_layers = len(picked)
    for name, value in lists.items():
        setattr(config, name, value)
