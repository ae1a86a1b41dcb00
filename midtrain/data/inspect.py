"""What is in a directory made by `midtrain data prepare`: tokens per stream, decontamination counts,
and, for a recipe, each stage's realised mixture shares, repetition and decoded samples.

Used by `midtrain data inspect`; returns plain data (the command prints it as tables or JSON). The
recipe and its registry are passed in: data/ does not load the catalogue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midtrain.schema.recipe import Recipe
    from midtrain.schema.registry import Registry

WINDOWS_PER_BATCH = 16  # the sampler's global batch when measuring shares and epochs
SAMPLE_TOKENS = 64  # tokens decoded per sample


def inspect_streams(directory: Path) -> dict[str, Any]:
    """The streams of `directory` (tokens, documents, dtype), their total, and the decontamination counts if recorded."""
    from midtrain.data.packing import read_manifest

    streams = read_manifest(directory / "shards")["streams"]
    info: dict[str, Any] = {
        "directory": str(directory),
        "streams": {
            name: {"tokens": s["tokens"], "documents": s["documents"], "dtype": s["dtype"]}
            for name, s in streams.items()
        },
        "total_tokens": sum(s["tokens"] for s in streams.values()),
    }
    report_path = directory / "decontam.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        info["decontamination"] = {
            "n": report["n"],
            "threshold": report["threshold"],
            "action": report["action"],
            "sources": report["sources"],
        }
    return info


def sample_stages(
    directory: Path, recipe: Recipe, registry: Registry, sequences: int, sequence_length: int, samples: int, seed: int
) -> dict[str, Any]:
    """Per stage of `recipe`: target and realised shares over `sequences` draws of `sequence_length`-token
    windows, epochs per stream, and `samples` decoded windows, from the shards in `directory`."""
    from midtrain.data.mixture import MixtureSampler, gather
    from midtrain.data.packing import open_shard, read_manifest
    from midtrain.data.prepare import stage_streams
    from midtrain.data.tokenizer import load_tokenizer

    shard_dir = directory / "shards"
    manifest = read_manifest(shard_dir)
    streams = manifest["streams"]
    scale = "tiny" if any(name.endswith(".heldout") for name in streams) else "full"
    tokenizer_path = manifest.get("tokenizer", {}).get("path", "../tokenizer")
    tokenizer = load_tokenizer(shard_dir / tokenizer_path if tokenizer_path.startswith("..") else tokenizer_path)
    shards = {name: open_shard(shard_dir, entry) for name, entry in streams.items()}
    out: dict[str, Any] = {}
    for stage in recipe.stages:
        shares = stage_streams(recipe, stage, registry, scale)
        sampler = MixtureSampler(
            {n: s["tokens"] for n, s in streams.items()},
            shares,
            sequence_length,
            global_batch=WINDOWS_PER_BATCH,
            seed=seed,
        )
        realised = sampler.realised_shares(sequences)
        picks = sampler.positions(0, samples)
        windows = gather(shards, picks, sequence_length)
        out[stage.name] = {
            "target_shares": {k: round(v, 6) for k, v in shares.items()},
            "realised_shares": {k: round(v, 6) for k, v in realised.items()},
            "sequences": sequences,
            "epochs": {k: round(v, 4) for k, v in sampler.epochs(sequences // WINDOWS_PER_BATCH).items()},
            "samples": [
                {"stream": name, "window": window, "text": tokenizer.decode(row[:SAMPLE_TOKENS].tolist())}
                for (name, window), row in zip(picks, windows)
            ],
        }
    return out
