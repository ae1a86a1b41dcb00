"""Distributed checkpoints: torch.distributed.checkpoint (DCP) for runs of more than one process.

A run of one process writes the single-file checkpoints of midtrain/train/checkpoint.py. A run of
several (DDP or FSDP2) writes this format instead: every rank writes its own shard of the state in
parallel, nothing is gathered on one rank, and the checkpoint can be resumed on another number of
processes (DCP reshards on load). `checkpoints/step-0000120/` holds:

    __0_0.distcp, __1_0.distcp, ...  each rank's part of the model, the optimizer and the weight
                                     averages (sharded state dicts: FSDP2's DTensor shards; under
                                     DDP, replicated tensors are written once, spread over the ranks)
    .metadata                        DCP's index of every tensor's chunks, written by rank 0 once
                                     every rank's shard is written
    rank-00000.json, ...             each rank's own state: its RNG
    state.json                       step, tokens seen, run, parameters, world size, the callbacks'
                                     JSON state, the tokenizer
    config.json                      the model's config (what `midtrain export` needs)
    manifest.json                    size and sha256 of every file; written last

Atomic and verified as the single-file format is: the ranks write into `.step-0000120.dcp.tmp/`;
once DCP's metadata is complete, each rank hashes its own files, rank 0 writes the manifest (the
completion marker) and renames the directory. A directory without a manifest that verifies is
never resumed: the run falls back to the previous checkpoint (checkpoint.verify, resume.py).

State dict keys: `model.<name>` (the model's canonical names, as `get_state_dict` returns them
under DDP, FSDP2 or no wrapper alike), `optimizer.state.<name>.<kind>` and
`optimizer.param_groups.<name>.<setting>` (DCP's flattened optimizer state; a Muon run's two
optimizers as one), and `<file stem>.<name>` for a callback's tensors (`averages.ema.<name>`,
`averages.polyak.<name>`, `averages._polyak_count`).

Resuming on another world size: DCP reads each rank's chunks of every tensor from whatever shards
hold them, so 2 → 1, 1 → 2 or 8 → 16 processes all load. The data position needs no remapping:
the batch of step s is the same global set of sequences for any world size (the sampler splits it
over the ranks), so the step is the position. Rank r restores the RNG state of rank r mod W of the
W ranks that wrote the checkpoint (every rank starts from the same seed, so this is exact for the
trainer's own use of the RNG; dropout masks after a change of world size are new draws).

Async save (`midtrain train --async-checkpoint`, or MIDTRAIN_ASYNC_CHECKPOINT=1): the state is
copied to CPU memory at the checkpoint's step and written by a background thread (`dcp.async_save`
on a gloo process group of its own) while training goes on; the checkpoint is completed (hashes,
manifest, rename) at the next checkpoint or at the end of the run, whichever comes first. A run
killed in between loses only that checkpoint. The run's last checkpoint is always written
synchronously.

Nothing read back is unpickled freely: DCP's `.metadata` (a pickle) is read with an unpickler that
admits only DCP's metadata classes, and its non-tensor values with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from midtrain.errors import MidtrainError, short
from midtrain.io import publish_dir, write_json, write_text
from midtrain.train import checkpoint as ckpt

if TYPE_CHECKING:
    from concurrent.futures import Future

    import torch
    from torch.distributed.checkpoint.metadata import Metadata

    from midtrain.train.loop import Trainer

ASYNC_ENV = "MIDTRAIN_ASYNC_CHECKPOINT"
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # a torch.layout by its name, from torch's own table
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("pathlib._local", "PosixPath"),
    ("pathlib._local", "PurePosixPath"),
}


def async_enabled() -> bool:
    return os.environ.get(ASYNC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# ---- reading, safely ----


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        import importlib

        import torch

        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout)):
            return getattr(torch, name)
        if (module, name) in _METADATA_CLASSES:
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of DCP's metadata")


def read_metadata(path: Path) -> Metadata:
    """DCP's `.metadata` of a checkpoint, unpickled with only DCP's own classes admitted, and checked:
    every chunk it points to lies inside a .distcp file the checkpoint's directory holds."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import Metadata

    file = path / ckpt.DCP_METADATA
    try:
        with open(file, "rb") as handle:
            metadata = _MetadataUnpickler(handle).load()
    except Exception as exc:  # unpickling refused, truncated, or unreadable
        raise MidtrainError.single(f"DCP metadata cannot be read: {str(exc)[:200]}", file=file) from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise MidtrainError.single("DCP metadata is not DCP's Metadata", file=file)
    sizes: dict[str, int] = {}
    for index, info in metadata.storage_data.items():
        name = getattr(info, "relative_path", None)
        if not isinstance(info, _StorageInfo) or not isinstance(name, str) or not ckpt.is_dcp_shard(name):
            raise MidtrainError.single(f"DCP metadata points outside the checkpoint ({short(name)})", file=file)
        if name not in sizes:
            shard = path / name
            sizes[name] = shard.stat().st_size if shard.is_file() and not shard.is_symlink() else -1
        offset, length = info.offset, info.length
        if not (isinstance(offset, int) and isinstance(length, int) and offset >= 0 and length >= 0):
            raise MidtrainError.single(f"DCP metadata has a bad extent for {short(index.fqn)}", file=file)
        if offset + length > sizes[name]:
            raise MidtrainError.single(
                f"DCP metadata points past the end of {name} (for {short(index.fqn)})",
                file=file,
                expected=f"at most {max(sizes[name], 0)} bytes",
                found=f"{offset + length}",
            )
    return metadata


def _reader(path: Path) -> Any:
    from torch.distributed.checkpoint import FileSystemReader

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
            from torch.distributed.checkpoint.metadata import StorageMeta

            metadata = read_metadata(path)
            metadata.storage_meta = metadata.storage_meta or StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(path)


def _planner() -> Any:
    """DCP's load planner, with the non-tensor values read by `torch.load(weights_only=True)`."""
    import torch
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint.planner import ReadItem

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
            from torch.distributed.checkpoint._nested_dict import set_element

            loaded = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    return SafePlanner()


def load(state_dict: dict[str, Any], path: Path, dist: bool) -> None:
    """DCP's load into `state_dict` (in place for tensors; collective when `dist`)."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(state_dict, storage_reader=_reader(path), planner=_planner(), no_dist=not dist)


def load_keys(path: Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """Some tensors of a DCP checkpoint, whole (their chunks from every rank's shard), in this process
    alone; what `midtrain export` streams a model through."""
    import torch
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = read_metadata(path)
    state: dict[str, Any] = {}
    for key in keys:
        entry = metadata.state_dict_metadata.get(key)
        if not isinstance(entry, TensorStorageMetadata):
            raise MidtrainError.single(f"DCP checkpoint holds no tensor {short(key)}", file=path / ckpt.DCP_METADATA)
        state[key] = torch.empty(entry.size, dtype=entry.properties.dtype)
    load(state, path, dist=False)
    return state


# ---- the state of a run ----


def options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True)


def state_dict(trainer: Trainer, callback_tensors: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's sharded state dict (see the module's docstring for its keys); collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from midtrain.train.optim import parts

    model, optimizer = get_state_dict(trainer.model, parts(trainer.optimizer), options=options())
    return {"model": model, "optimizer": optimizer, **callback_tensors}


def callback_key(file: str) -> str:
    """A tensor callback's top-level key: its file's stem (averages.safetensors -> averages)."""
    return Path(file).stem


def _flat_keys(state: dict[str, Any]) -> dict[str, Any]:
    """DCP's flattened key of every value of a state dict (as in `.metadata`) -> the value."""
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict

    flat, _ = flatten_state_dict(state)
    return flat


# ---- saving ----


@dataclass
class Pending:
    """A checkpoint whose shards are being (or have been) written, waiting to be completed."""

    step: int
    tmp: Path
    final: Path
    state: dict[str, Any]  # state.json, as it was at the checkpoint's step
    config: str
    future: Future[dict[str, Any]] | None = None  # async: this rank's files, written and hashed


_PENDING: weakref.WeakKeyDictionary[Trainer, Pending] = weakref.WeakKeyDictionary()
_ASYNC_GROUP: list[Any] = []
_HASHER: list[Any] = []


def _async_group() -> Any:
    """A gloo process group for background writes, apart from the one training uses (collective
    the first time: every rank reaches its first async checkpoint together)."""
    import torch

    if not _ASYNC_GROUP:
        _ASYNC_GROUP.append(torch.distributed.new_group(backend="gloo"))
    return _ASYNC_GROUP[0]


def save_checkpoint(trainer: Trainer, run_state: dict[str, Any], tensors: dict[str, dict[str, Any]]) -> None:
    """Write this step's checkpoint (collective: every rank calls it at the same step). `run_state` is
    state.json's content, `tensors` the callbacks' tensor states by key; asynchronously when
    enabled, except for the run's last checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    from midtrain.train.model import unwrapped

    finish_pending(trainer)
    dist, step = trainer.dist, trainer.step
    tmp = trainer.checkpoint_dir / f".step-{step:07d}.dcp.tmp"
    if dist.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    trainer.barrier()
    state = state_dict(trainer, tensors)
    rank_state = {"rank": dist.rank, "world": dist.world, "step": step, "rng": ckpt.rng_state()}
    write_json(tmp / ckpt.rank_file(dist.rank), rank_state)
    config = unwrapped(trainer.model).config.to_json_string()
    pending = Pending(step, tmp, trainer.checkpoint_dir / f"step-{step:07d}", run_state, config)
    writer = FileSystemWriter(tmp)
    if async_enabled() and step < trainer.spec.steps:
        upload = cast("Future[Any]", dcp.async_save(state, storage_writer=writer, process_group=_async_group()))
        pending.future = _in_background(upload, tmp, dist.rank)
        _PENDING[trainer] = pending
        return
    dcp.save(state, storage_writer=writer)
    _complete(trainer, pending)


def finish_pending(trainer: Trainer) -> None:
    """Complete an asynchronous checkpoint still in flight (collective)."""
    pending = _PENDING.pop(trainer, None)
    if pending is not None:
        _complete(trainer, pending)


def drain() -> None:
    """Wait for the background writes still in flight, without completing them (no collectives):
    a run that stops on an error lets them finish before its process groups are destroyed. Their
    checkpoints stay incomplete (no manifest) and are cleaned up when the run resumes."""
    for pending in list(_PENDING.values()):
        if pending.future is not None:  # a failed background write leaves it incomplete either way
            with contextlib.suppress(Exception):
                pending.future.result()
    _PENDING.clear()
    _ASYNC_GROUP.clear()  # destroyed with the other process groups


def own_files(tmp: Path, rank: int) -> dict[str, Any]:
    """The manifest entries (size, sha256) of the files this rank wrote: its shards and rank file."""
    return {
        p.name: ckpt.file_entry(p)
        for p in sorted(tmp.iterdir())
        if p.name == ckpt.rank_file(rank) or (ckpt.is_dcp_shard(p.name) and p.name.startswith(f"__{rank}_"))
    }


def _in_background(upload: Future[Any], tmp: Path, rank: int) -> Future[dict[str, Any]]:
    """This rank's files hashed once DCP's background write of them is done, in a thread of its own:
    an async checkpoint keeps the hashing off the training loop too."""
    from concurrent.futures import ThreadPoolExecutor

    if not _HASHER:
        _HASHER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="midtrain-checkpoint"))

    def written_and_hashed() -> dict[str, Any]:
        upload.result()
        return own_files(tmp, rank)

    return cast("Future[dict[str, Any]]", _HASHER[0].submit(written_and_hashed))


def _complete(trainer: Trainer, pending: Pending) -> None:
    """Wait for the shards and each rank's hashes of its own files (taken here, or in the background
    for an async checkpoint), then (rank 0) write state.json, config.json and the manifest, publish
    the directory and prune old checkpoints."""
    import torch

    dist = trainer.dist
    own = pending.future.result() if pending.future is not None else own_files(pending.tmp, dist.rank)
    gathered: list[dict[str, Any] | None] = [None] * dist.world
    torch.distributed.all_gather_object(gathered, own)
    if dist.main:
        tmp = pending.tmp
        write_json(tmp / "state.json", {**pending.state, "step": pending.step, "world": dist.world})
        write_text(tmp / "config.json", pending.config)
        files: dict[str, Any] = {}
        for part in gathered:
            files.update(part or {})
        for name in ckpt.DCP_REQUIRED:
            files[name] = ckpt.file_entry(tmp / name)
        present = {p.name for p in tmp.iterdir()}
        if present != set(files):
            raise MidtrainError.single(
                "a distributed checkpoint's files are not what its ranks wrote",
                file=tmp,
                expected=", ".join(sorted(files)[:6]),
                found=", ".join(sorted(present)[:6]),
            )
        manifest = {"step": pending.step, "format": "dcp", "world": dist.world, "files": dict(sorted(files.items()))}
        write_json(tmp / ckpt.MANIFEST, manifest)
        publish_dir(tmp, pending.final, sync_files=False)  # DCP and midtrain's writers fsynced every file
        ckpt.prune(trainer.checkpoint_dir, pending.step, trainer.spec.keep_last)
    trainer.barrier()


# ---- loading ----


def check_layout(path: Path, metadata: Metadata, template: dict[str, Any], only: str = "") -> None:
    """The checkpoint must hold exactly the values this run's state has (of those whose key starts
    with `only`), tensors of the same global shapes and dtypes; a MidtrainError naming what differs
    otherwise."""
    import torch
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from midtrain.train.resume import shape_summary

    saved = {key: entry for key, entry in metadata.state_dict_metadata.items() if key.startswith(only)}
    wanted = _flat_keys(template)
    missing, unexpected = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
    if missing or unexpected:
        raise MidtrainError.single(
            "checkpoint does not match this run (model, optimizer or averages)",
            file=path / ckpt.DCP_METADATA,
            expected=f"{len(wanted)} values" + (f", including {', '.join(map(short, missing[:3]))}" if missing else ""),
            found=f"{len(saved)} values"
            + (f", including {', '.join(map(short, unexpected[:3]))}" if unexpected else ""),
        )
    mine = {k: tuple(v.shape) for k, v in wanted.items() if isinstance(v, torch.Tensor)}
    theirs = {k: tuple(e.size) for k, e in saved.items() if isinstance(e, TensorStorageMetadata)}
    if mine != theirs:
        raise MidtrainError.single(
            "checkpoint does not match this run",
            file=path / ckpt.DCP_METADATA,
            expected=shape_summary(mine, theirs),
            found=shape_summary(theirs, mine),
        )
    for key, value in wanted.items():
        entry = saved[key]
        if isinstance(value, torch.Tensor) and cast(TensorStorageMetadata, entry).properties.dtype != value.dtype:
            raise MidtrainError.single(
                f"checkpoint holds {short(key)} as another dtype",
                file=path / ckpt.DCP_METADATA,
                expected=str(value.dtype),
                found=str(cast(TensorStorageMetadata, entry).properties.dtype),
            )


def rank_state(path: Path, state: dict[str, Any], rank: int) -> dict[str, Any]:
    """The own state this rank resumes with: that of rank `rank mod W` of the W ranks that wrote the
    checkpoint (state.json's `world`), checked."""
    import json

    import torch

    world = state.get("world")
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise MidtrainError.single(
            "checkpoint state: field world is not valid", file=path / "state.json", found=short(world)
        )
    source = rank % world
    file = path / ckpt.rank_file(source)
    try:
        saved = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MidtrainError.single(f"rank state is not readable JSON: {str(exc)[:200]}", file=file) from None
    size = torch.get_rng_state().numel()
    rng = saved.get("rng") if isinstance(saved, dict) else None
    torch_rng = rng.get("torch") if isinstance(rng, dict) else None
    if (
        not isinstance(saved, dict)
        or saved.get("rank") != source
        or saved.get("step") != state["step"]
        or not isinstance(torch_rng, list)
        or len(torch_rng) != size
        or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in torch_rng)
    ):
        raise MidtrainError.single(
            "rank state is not valid",
            file=file,
            expected=f"rank {source}, step {state['step']} and an RNG state of {size} bytes",
            found=short(saved, 120),
        )
    return saved


def load_into(trainer: Trainer, path: Path, template: dict[str, Any]) -> None:
    """Read the checkpoint into `template` (this run's state dict; each rank reads its own chunks)
    and apply model and optimizer state (collective when distributed)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from midtrain.train.optim import parts

    load(template, path, dist=trainer.dist.world > 1)
    set_state_dict(
        trainer.model,
        parts(trainer.optimizer),
        model_state_dict=template["model"],
        optim_state_dict=template["optimizer"],
        options=options(),
    )
