from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DIMS = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
}


def make_spec(prepared: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "test/run-0",
        "out": str(out),
        "tokenizer": str(prepared / "tokenizer"),
        "data": str(prepared),
        "init": {"family": "llama", "dims": DIMS, "vocab_size": 512, "max_position_embeddings": 64},
        "streams": {"prose.train": 0.6, "code.train": 0.2, "math.train": 0.2},
        "sequence_length": 64,
        "global_batch": 8,
        "micro_batch": 4,
        "steps": 12,
        "schedule": {"type": "cosine", "peak_lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2},
        "checkpoint_every": 4,
        "threads": 1,
    }
    spec.update(overrides)
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def spec_factory(prepared: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    def factory(name: str = "run", **overrides: Any) -> Path:
        out = Path(overrides.pop("out", tmp_path / name))
        return write_spec(tmp_path / f"{name}.json", make_spec(prepared, out, **overrides))

    return factory


def weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def losses(out: Path) -> list[float]:
    import csv

    with open(out / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return [float(r[-1]) for r in rows[1:]]
