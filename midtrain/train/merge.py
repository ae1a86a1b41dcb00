"""Weight averaging of saved models: uniform soups of data orders, weighted linear merges.

Streamed tensor by tensor (safetensors' lazy `safe_open`), so peak memory stays near one model:
the output plus one tensor of each input at a time. Sums are accumulated in float64 and cast back
to each tensor's dtype, so the result is the exact elementwise (weighted) mean.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError
from midtrain.io import atomic_dir, remove_stale_temporaries


def _weight_files(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        raise MidtrainError.single("model directory not found", file=model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise MidtrainError.single("no .safetensors weights in this directory", file=model_dir)
    return files


def merge_models(inputs: list[Path], out: Path, weights: list[float] | None = None) -> dict[str, Any]:
    """Average `inputs` (HF model directories) into `out`; config and tokenizer come from the first."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    if len(inputs) < 2:
        raise MidtrainError.single("merging needs at least two models", found=str(len(inputs)))
    uniform = weights is None
    weights = weights or [1.0 / len(inputs)] * len(inputs)
    if len(weights) != len(inputs):
        raise MidtrainError.single("one weight per input is needed", expected=str(len(inputs)), found=str(len(weights)))
    if any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise MidtrainError.single(
            "weights must be non-negative and sum to 1", found=", ".join(f"{w:g}" for w in weights)
        )
    layouts = [[f.name for f in _weight_files(i)] for i in inputs]
    for path, layout in zip(inputs[1:], layouts[1:]):
        if layout != layouts[0]:
            raise MidtrainError.single(
                "models are saved in different file layouts", file=path, expected=str(layouts[0]), found=str(layout)
            )
    configs = [json.loads((i / "config.json").read_text()) for i in inputs if (i / "config.json").exists()]
    shapes = {c.get("hidden_size"): 1 for c in configs}
    if len(shapes) > 1:
        raise MidtrainError.single(
            "models have different architectures (hidden sizes differ)", found=str(sorted(shapes))
        )
    tensors_written = 0
    remove_stale_temporaries(out.parent)
    with atomic_dir(out) as tmp:
        for filename in layouts[0]:
            handles = [safe_open(str(i / filename), framework="pt") for i in inputs]
            keys = sorted(handles[0].keys())
            for path, handle in zip(inputs[1:], handles[1:]):
                if sorted(handle.keys()) != keys:
                    missing = sorted(set(keys) ^ set(handle.keys()))[:3]
                    raise MidtrainError.single(f"models have different tensors (e.g. {missing})", file=path / filename)
            merged: dict[str, Any] = {}
            metadata = handles[0].metadata()
            for key in keys:
                first = handles[0].get_tensor(key)
                # Uniform: sum, then divide by N (the exact mean); weighted: sum of weight × tensor.
                total = first.to(torch.float64) * (1.0 if uniform else weights[0])
                for weight, path, handle in zip(weights[1:], inputs[1:], handles[1:]):
                    tensor = handle.get_tensor(key)
                    if tensor.shape != first.shape:
                        raise MidtrainError.single(
                            f"tensor {key} has shape {tuple(tensor.shape)}, expected {tuple(first.shape)}",
                            file=path / filename,
                        )
                    total += tensor.to(torch.float64) * (1.0 if uniform else weight)
                if uniform:
                    total /= len(inputs)
                merged[key] = total.to(first.dtype) if first.is_floating_point() else first
                tensors_written += 1
            save_file(merged, str(tmp / filename), metadata=metadata)
            del merged
        for item in inputs[0].iterdir():
            if (
                item.is_file()
                and not item.name.endswith(".safetensors")
                and item.name != "model.safetensors.index.json"
            ):
                shutil.copy2(item, tmp / item.name)
        index = inputs[0] / "model.safetensors.index.json"
        if index.exists():
            shutil.copy2(index, tmp / index.name)
        record = {"merged_from": [str(i) for i in inputs], "weights": weights, "tensors": tensors_written}
        (tmp / "merge.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
