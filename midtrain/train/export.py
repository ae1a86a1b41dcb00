"""`midtrain export CHECKPOINT OUT`: a checkpoint as a Hugging Face model directory, streamed.

Either checkpoint format is read (midtrain/train/checkpoint.py: the single-file one of one-process
runs, the DCP one of distributed runs, midtrain/train/dcp.py), after it verifies. The weights go
into safetensors files of at most `max_shard_bytes` each (`model.safetensors`, or
`model-00001-of-0000N.safetensors` and `model.safetensors.index.json` above that size), written
one file at a time: a file's tensors are read (DCP: only their chunks, from every rank's shard),
written and freed before the next, so peak memory stays near one output file, whatever the model's
size. The tensor names are those `from_pretrained` expects: the model's state dict, built from the
checkpoint's config on the meta device, without the tied copies (`lm_head.weight` when the
embeddings are tied), exactly what `save_pretrained` writes.

`kind` picks the weights: "model", or the averages a run keeps ("ema"; "polyak", the sum of its
snapshots divided by their count), as `model-ema/` and `model-polyak/` hold them.

A distributed run writes its final model this way at its end (`export_in_run`): the ranks split
the output files between them, rank 0 writes the index, config and tokenizer and publishes the
directory; no rank ever holds the whole model.
"""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError, short
from midtrain.io import atomic_dir, publish_dir, remove_stale_temporaries, write_json
from midtrain.train import checkpoint as ckpt

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from midtrain.train.loop import Trainer

KINDS = ("model", "ema", "polyak")
DEFAULT_SHARD_BYTES = 5 * 1024**3  # transformers' long-standing default max_shard_size ("5GB")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9})


def parse_size(text: str, option: str = "--max-shard-size") -> int:
    """ "5GB", "500MB", "2GiB", "100000" -> bytes; a MidtrainError naming the option otherwise."""
    match = _SIZE.match(text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) * _UNITS[unit] < 1:
        raise MidtrainError.single(
            "not a size", path=option, expected="a positive size such as 5GB, 500MB or 2GiB", found=short(text)
        )
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass
class Plan:
    """What an export reads and writes: the output files, each with its (checkpoint key, HF name)s."""

    checkpoint: Path
    kind: str
    dcp: bool
    config: PretrainedConfig
    tokenizer: Path | None
    state: dict[str, Any]
    files: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    count_key: str | None = None  # Polyak: the key of the snapshot count to divide by

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def resolve(path: Path) -> Path:
    """A checkpoint directory from what a user names: the checkpoint itself, a run's `checkpoints/`
    directory or the run directory (then its newest checkpoint that verifies)."""
    if ckpt.step_of(path) is not None:
        if not path.is_dir():
            raise MidtrainError.single("checkpoint directory not found", file=path)
        return path
    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not directory.is_dir():
        raise MidtrainError.single("checkpoint directory not found", file=path)
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        found = ckpt.latest_good(directory)
    if found is None:
        reasons = "; ".join(str(w.message) for w in skipped[:3])
        raise MidtrainError.single(
            "no usable checkpoint here" + (f" ({reasons})" if reasons else ""),
            file=path,
            expected="a step-NNNNNNN checkpoint directory, a run's checkpoints/ directory or a run directory",
        )
    return found


def plan_export(
    checkpoint: Path,
    kind: str = "model",
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    tokenizer: Path | None = None,
    verified: bool = False,
) -> Plan:
    """Check the checkpoint (it must verify, unless the caller just wrote it: `verified`) and plan
    the output files; reads no tensor."""
    if kind not in KINDS:
        raise MidtrainError.single("unknown weights", path="--weights", expected=" / ".join(KINDS), found=kind)
    problem = None if verified else ckpt.verify(checkpoint)
    if problem is not None:
        raise MidtrainError.single(f"checkpoint is not usable: {problem}", file=checkpoint)
    state = ckpt.read_state(checkpoint)
    dcp = ckpt.is_dcp(checkpoint)
    config, recorded_tokenizer = _config(checkpoint, dcp, state)
    plan = Plan(checkpoint, kind, dcp, config, tokenizer or recorded_tokenizer, state)
    available = _available(plan)  # checkpoint key -> (shape, dtype, bytes)
    prefix = {"model": "", "ema": "ema.", "polyak": "polyak."}[kind]
    names, architecture = hf_names(config)
    config.architectures = [architecture]  # as save_pretrained records it
    stored = {name: _stored_key(plan, prefix + name) for name in names}
    missing = [name for name, key in stored.items() if key not in available]
    if missing:
        what = "weights" if kind == "model" else f"{kind} averages (the run keeps none, or none yet)"
        raise MidtrainError.single(
            f"checkpoint does not hold the model's {what}",
            file=checkpoint,
            expected=f"{len(names)} tensors of the model in config.json, e.g. {missing[0]}",
            found=f"{len(names) - len(missing)} of them",
        )
    if kind == "polyak":
        plan.count_key = _stored_key(plan, "_polyak_count")
    current: list[tuple[str, str]] = []
    size = 0
    groups: list[list[tuple[str, str]]] = []
    for name in names:
        nbytes = available[stored[name]]
        if current and size + nbytes > max_shard_bytes:
            groups.append(current)
            current, size = [], 0
        current.append((stored[name], name))
        size += nbytes
        plan.sizes[name] = nbytes
    groups.append(current)
    total = len(groups)
    for index, group in enumerate(groups):
        filename = "model.safetensors" if total == 1 else f"model-{index + 1:05d}-of-{total:05d}.safetensors"
        plan.files.append((filename, group))
    return plan


def _config(checkpoint: Path, dcp: bool, state: dict[str, Any]) -> tuple[PretrainedConfig, Path | None]:
    """The model's config and the run's tokenizer: a DCP checkpoint holds its config.json; a
    single-file one is read with its run's spec.json (`<run>/checkpoints/step-N`)."""
    from transformers import AutoConfig

    if dcp:
        try:
            config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise MidtrainError.single(
                f"config.json is not a model config: {str(exc)[:200]}", file=checkpoint / "config.json"
            ) from None
        tokenizer = state.get("tokenizer")
        return config, Path(tokenizer) if isinstance(tokenizer, str) and tokenizer else None
    from midtrain.train.config import RunSpec
    from midtrain.train.model import model_config

    spec_file = checkpoint.parent.parent / "spec.json"
    if not spec_file.is_file():
        raise MidtrainError.single(
            "a single-file checkpoint is exported with its run's spec.json (it holds no model config)",
            file=spec_file,
            expected="the checkpoint inside its run directory: RUN/checkpoints/step-NNNNNNN",
        )
    spec = RunSpec.load(spec_file)
    return model_config(spec), spec.tokenizer


def hf_names(config: PretrainedConfig) -> tuple[list[str], str]:
    """(the tensor names `save_pretrained` writes for this config's model: its state dict, built on
    the meta device, without the second name of a tied parameter; the model's class name)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    first: dict[int, str] = {}
    tied: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            tied.add(name)
        else:
            first[id(param)] = name
    return [name for name in model.state_dict() if name not in tied], type(model).__name__


def _stored_key(plan: Plan, name: str) -> str:
    """Where a tensor is in the checkpoint: `model.<name>` / `averages.<name>` in a DCP checkpoint."""
    if plan.kind == "model":
        return f"model.{name}" if plan.dcp else name
    return f"averages.{name}" if plan.dcp else name


def _available(plan: Plan) -> dict[str, int]:
    """Checkpoint key -> bytes of every tensor the planned kind can use."""
    if plan.dcp:
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        from midtrain.train.dcp import read_metadata

        metadata = read_metadata(plan.checkpoint)
        out = {}
        for key, entry in metadata.state_dict_metadata.items():
            if isinstance(entry, TensorStorageMetadata):
                out[key] = entry.size.numel() * entry.properties.dtype.itemsize
        return out
    from safetensors import safe_open

    file = plan.checkpoint / ("model.safetensors" if plan.kind == "model" else ckpt.AVERAGES)
    if not file.is_file():
        return {}
    try:
        with safe_open(str(file), framework="pt") as handle:
            out = {}
            for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                piece = handle.get_slice(key)
                out[key] = _numel(piece.get_shape()) * _itemsize(piece.get_dtype())
            return out
    except Exception as exc:  # a header safetensors cannot parse
        raise MidtrainError.single(f"checkpoint file cannot be read: {str(exc)[:200]}", file=file) from None


def _numel(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def _itemsize(dtype: str) -> int:
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return max(1, int(digits) // 8) if digits else 1


def read_tensors(plan: Plan, keys: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors of the checkpoint, and nothing else (DCP: only their chunks are read)."""
    if plan.dcp:
        from midtrain.train.dcp import load_keys

        return load_keys(plan.checkpoint, keys)
    from safetensors import safe_open

    file = plan.checkpoint / ("model.safetensors" if plan.kind == "model" else ckpt.AVERAGES)
    with safe_open(str(file), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in keys}


def write_file(plan: Plan, index: int, tmp: Path) -> None:
    """Output file `index` of the plan into `tmp`: read its tensors, write them, free them."""
    from safetensors.torch import save_file

    filename, group = plan.files[index]
    keys = [key for key, _ in group]
    if plan.count_key is not None:
        keys.append(plan.count_key)
    loaded = read_tensors(plan, keys)
    count = loaded.pop(plan.count_key) if plan.count_key is not None else None
    tensors = {}
    for key, name in group:
        tensor = loaded.pop(key)
        if count is not None:  # the Polyak average: the sum of the snapshots over their count
            tensor = tensor / int(count.reshape(-1)[0])
        tensors[name] = tensor.contiguous()
    save_file(tensors, str(tmp / filename), metadata={"format": "pt"})


def finish(plan: Plan, tmp: Path, extra: dict[str, Any] | None) -> None:
    """The index (when sharded), config, generation config, tokenizer and midtrain.json."""
    from midtrain.train.model import write_model_files

    if len(plan.files) > 1:
        weight_map = {name: filename for filename, group in plan.files for _, name in group}
        index = {"metadata": {"total_size": plan.total_bytes}, "weight_map": weight_map}
        write_json(tmp / "model.safetensors.index.json", index)
    tokenizer = plan.tokenizer if plan.tokenizer is not None and plan.tokenizer.is_dir() else None
    record = {
        "run": plan.state.get("run"),
        "steps": plan.state["step"],
        "tokens_seen": plan.state["tokens_seen"],
        "exported_from": str(plan.checkpoint),
        **({"average": plan.kind} if plan.kind != "model" else {}),
        **(extra or {}),
    }
    write_model_files(plan.config, tokenizer, tmp, record)


def export(
    checkpoint: Path,
    out: Path,
    kind: str = "model",
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    tokenizer: Path | None = None,
) -> dict[str, Any]:
    """Write `checkpoint`'s weights as an HF directory at `out`, atomically; one process."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    checkpoint = resolve(checkpoint)
    plan = plan_export(checkpoint, kind, max_shard_bytes, tokenizer)
    if tokenizer is not None and not tokenizer.is_dir():
        raise MidtrainError.single("tokenizer directory not found", file=tokenizer, path="--tokenizer")
    out = out.resolve()
    remove_stale_temporaries(out.parent) if out.parent.is_dir() else None
    with atomic_dir(out) as tmp:
        for index in range(len(plan.files)):
            write_file(plan, index, tmp)
        finish(plan, tmp, None)
    return {
        "checkpoint": str(checkpoint),
        "out": str(out),
        "files": len(plan.files),
        "tensors": len(plan.sizes),
        "bytes": plan.total_bytes,
        "tokenizer": str(plan.tokenizer) if plan.tokenizer is not None and plan.tokenizer.is_dir() else None,
    }


def export_in_run(trainer: Trainer, checkpoint: Path, out: Path, kind: str, extra: dict[str, Any]) -> None:
    """A distributed run's final `kind` weights from its final (DCP) checkpoint into `out`, every rank
    writing its share of the files into one shared temporary directory; collective."""
    import torch

    dist = trainer.dist
    tmp = out.with_name(f".{out.name}.export.tmp")
    plan = plan_export(checkpoint, kind, DEFAULT_SHARD_BYTES, trainer.spec.tokenizer, verified=True)
    if dist.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    trainer.barrier()
    failed = torch.zeros(1, dtype=torch.float64, device=dist.device)
    try:
        for index in range(dist.rank, len(plan.files), dist.world):
            write_file(plan, index, tmp)
    except Exception:
        failed += 1
        raise
    finally:
        torch.distributed.all_reduce(failed)
    if failed.item():
        raise MidtrainError.single("another rank failed to write its part of the model", file=out)
    if dist.main:
        finish(plan, tmp, {**extra, "run": extra.get("run", plan.state.get("run"))})
        publish_dir(tmp, out)
    trainer.barrier()


def describe(record: dict[str, Any]) -> str:
    """One line for the CLI."""
    size = f"{record['bytes'] / 1e9:.2f} GB" if record["bytes"] >= 1e8 else f"{record['bytes'] / 1e6:.1f} MB"
    files = f"{record['files']} safetensors file{'s' if record['files'] != 1 else ''}"
    tokenizer = (
        f", tokenizer from {record['tokenizer']}" if record["tokenizer"] else ", no tokenizer (pass --tokenizer)"
    )
    return (
        f"exported {record['checkpoint']} → {record['out']}: {record['tensors']} tensors, {size} in {files}{tokenizer}"
    )
