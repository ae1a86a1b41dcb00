"""A run's output directory and training data: checked before anything is built."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from midtrain.data.mixture import MixtureSampler
from midtrain.data.packing import open_shard, read_manifest
from midtrain.errors import MidtrainError
from midtrain.io import write_json
from midtrain.train.config import RunSpec

# what a run writes in its directory; removed when the directory is reused for other settings
RUN_OUTPUTS = ("checkpoints", "model", "model-ema", "model-polyak", "dvclive", "summary.json", "resolved.json")


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise MidtrainError.single(f"output directory is not writable: {exc.strerror or exc}", file=out) from None


def claim(out: Path, spec: RunSpec) -> None:
    """Record the spec in `out/spec.json` and what the run trains from in `out/inputs.json`
    (`inputs_identity`). Checkpoints of a different spec, or of other data or another starting
    model under the same paths (a base retrained, a data stage rerun), are not resumed: the run
    directory starts afresh (what it held is in DVC's cache)."""
    current = spec.model_dump(mode="json")
    inputs = inputs_identity(spec)
    path, inputs_path = out / "spec.json", out / "inputs.json"
    changed = None
    if path.exists() and _read(path) != current:
        changed = "settings"
    elif inputs_path.exists() and _read(inputs_path) != inputs:
        changed = "data or starting model"
    if changed:
        for target in [*(out / name for name in RUN_OUTPUTS), *out.glob("at-step-*")]:  # save_at snapshots
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        print(f"{spec.name}: {changed} changed since the last run in {out}; starting afresh", flush=True)
    write_json(path, current)
    write_json(inputs_path, inputs)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def inputs_identity(spec: RunSpec) -> dict[str, Any]:
    """What a run's checkpoints depend on besides its spec: the data (the sha256 of its shard
    manifest, which holds every stream's sha256) and, for a starting model in a local directory,
    the fingerprint of its weight files (`io.weights_fingerprint`, as the pipeline's done stamps
    use: seconds per GB, once per start). A hub id is pinned by the spec's revision."""
    from midtrain.io import file_sha256, weights_fingerprint
    from midtrain.train.config import Pretrained

    manifest = spec.data / "shards" / "manifest.json"
    identity: dict[str, Any] = {"data": file_sha256(manifest) if manifest.is_file() else None}
    if isinstance(spec.init, Pretrained) and Path(spec.init.path).is_dir():
        identity["init"] = weights_fingerprint(Path(spec.init.path))
    return identity


def open_data(spec: RunSpec) -> tuple[MixtureSampler, dict[str, Any], dict[str, Any]]:
    """(the run's mixture sampler, its memory-mapped shards by stream, the shard manifest)."""
    shard_dir = spec.data / "shards"
    manifest = read_manifest(shard_dir)
    streams = manifest["streams"]
    missing = [name for name in spec.streams if name not in streams]
    if missing:
        raise MidtrainError.single(
            f"the run mixes streams that {shard_dir} does not have: {', '.join(missing)}",
            expected=", ".join(sorted(streams)),
            found=", ".join(missing),
        )
    fim = None
    if spec.fim is not None and spec.fim.rate > 0:
        from midtrain.data.fim import resolve_fim
        from midtrain.data.tokenizer import load_tokenizer

        fim = resolve_fim(spec.fim, load_tokenizer(spec.tokenizer), spec.data_seed, list(spec.streams))
    sampler = MixtureSampler(
        {n: streams[n]["tokens"] for n in spec.streams},
        spec.streams,
        spec.sequence_length,
        spec.global_batch,
        seed=spec.data_seed,
        max_epochs=spec.max_epochs,
        on_repeat=spec.on_repeat,
        shares_end=spec.streams_end,
        steps=spec.steps,
        batch_ramp=[(phase.step, phase.global_batch) for phase in spec.batch_ramp],
        fim=fim,
    )
    shards = {n: open_shard(shard_dir, streams[n]) for n in spec.streams}
    return sampler, shards, manifest
