"""Checkpoints: atomic, verified, never unpickling arbitrary objects.

A checkpoint is a directory `step-000120/`. A run of one process writes the single-file format:
`model.safetensors`, `optimizer.pt` (tensors and plain containers only, loaded with
`weights_only=True`), optional `averages.safetensors` (EMA / Polyak), `state.json` (step, tokens
seen, RNG states, ..., and under "callbacks" the JSON state of stateful callbacks that keep no
tensors) and `manifest.json` with the sha256 of every file, written last. A run of several
processes writes the distributed format of midtrain/train/dcp.py (DCP's `.distcp` shards and
`.metadata`, one `rank-NNNNN.json` per rank, `state.json`, `config.json`; its manifest says
`"format": "dcp"` and the writing run's `world`). Either way the directory appears under its final
name only when complete (write to a temporary name, fsync, rename). On resume the newest
checkpoint that verifies is used; broken ones are reported and skipped, so the previous good one
is never lost (keep-last-N >= 2).

Nothing read back is trusted: the manifest must list exactly a checkpoint's files (plain names, the
required ones, nothing else) for its directory's step, the directory must hold nothing unlisted,
and `load` checks state.json's fields and turns any unreadable file into a MidtrainError naming it.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError, short
from midtrain.io import atomic_dir, file_sha256

STEP_DIR = re.compile(r"^step-(\d{7,10})$")
MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.safetensors", "optimizer.pt", "state.json")
AVERAGES = "averages.safetensors"  # the averaging callback's tensors (midtrain/train/callbacks/averaging.py)
OPTIONAL_FILES = (AVERAGES,)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# a distributed checkpoint (midtrain/train/dcp.py): DCP's metadata and shards, and midtrain's own files
DCP_METADATA = ".metadata"
DCP_REQUIRED = (DCP_METADATA, "state.json", "config.json")
_DCP_SHARD = re.compile(r"^__(\d{1,7})_(\d{1,7})\.distcp$")
MAX_WORLD = 100_000


def rank_file(rank: int) -> str:
    """The file holding one rank's own state (its RNG) in a distributed checkpoint."""
    return f"rank-{rank:05d}.json"


def step_of(path: Path) -> int | None:
    """The step a checkpoint directory is named for (`step-0000120` -> 120), None for other names."""
    match = STEP_DIR.match(path.name)
    if match is None:
        return None
    step = int(match.group(1))
    return step if path.name == f"step-{step:07d}" else None  # one spelling per step


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and not Path(name).is_absolute()
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return short(text[0], 200) if text else type(exc).__name__


def rng_state() -> dict[str, Any]:
    """torch's generators (dropout and friends); data order never uses global RNG (see data/mixture.py)."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save(
    directory: Path,
    step: int,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    averages: dict[str, Any] | None = None,
    keep_last: int = 2,
) -> Path:
    import torch
    from safetensors.torch import save_file

    target = directory / f"step-{step:07d}"
    with atomic_dir(target) as tmp:
        save_file(unshare(model_state), str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        if averages:
            save_file(unshare(averages), str(tmp / AVERAGES))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1))
        files = {p.name: file_entry(p) for p in sorted(tmp.iterdir())}
        (tmp / "manifest.json").write_text(json.dumps({"step": step, "files": files}, indent=1))
    prune(directory, step, keep_last)
    return target


def prune(directory: Path, step: int, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints up to `step`. Only those up to it: a newer one left
    behind (rejected on resume) must not push good ones out; it is replaced when the run reaches
    its step again."""
    for old in [p for p in list_checkpoints(directory) if (step_of(p) or 0) <= step][:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def is_dcp_shard(name: str) -> bool:
    """A DCP shard's file name (`__<rank>_<n>.distcp`)."""
    return _DCP_SHARD.match(name) is not None


def unshare(tensors: dict[str, Any]) -> dict[str, Any]:
    """CPU, contiguous copies with no shared storage (tied embeddings), as safetensors requires."""
    out: dict[str, Any] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone().contiguous() if pointer in seen else tensor.contiguous()
        seen.add(pointer)
    return out


def clean_partial(directory: Path) -> None:
    """Remove temporary directories left by a write that was killed (never a finished checkpoint)."""
    if directory.exists():
        for path in directory.iterdir():
            if path.name.startswith(".step-") and (path.name.endswith(".tmp") or path.name.endswith(".old")):
                shutil.rmtree(path, ignore_errors=True)


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    found = [p for p in directory.iterdir() if step_of(p) is not None and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: step_of(p) or 0)


def verify(path: Path, share: tuple[int, int] | None = None) -> str | None:
    """None when the checkpoint is complete and intact, else what is wrong with it.

    The manifest is not trusted either: it must list exactly the files a checkpoint of its format
    has (plain names, the required ones, nothing else), be for this directory's step, and the
    directory must hold nothing it does not list. Every file's size is checked; its sha256 too, or,
    with `share` = (rank, world), only every world-th file from the rank-th on: the ranks of a
    distributed run split the hashing of a large checkpoint and agree on the verdict."""
    step = step_of(path)
    if step is None:
        return f"{path.name!r} is not a checkpoint directory name (step-NNNNNNN)"
    manifest, problem = _read_manifest(path, step)
    if problem is not None:
        return problem
    files = manifest["files"]
    try:
        present = sorted(entry.name for entry in path.iterdir())
    except OSError as exc:
        return f"cannot list the checkpoint: {exc.strerror or exc}"
    unlisted = [name for name in present if name != MANIFEST and name not in files]
    if unlisted:
        return f"holds files the manifest does not list: {', '.join(map(short, unlisted[:5]))}"
    rank, world = share or (0, 1)
    for index, name in enumerate(sorted(files)):
        problem = _check_file(path, name, files[name], hash_it=index % world == rank)
        if problem is not None:
            return problem
    return None


def is_dcp(path: Path) -> bool:
    """Whether a checkpoint directory holds a distributed (DCP) checkpoint (midtrain/train/dcp.py)."""
    return (path / DCP_METADATA).is_file()


def _read_manifest(path: Path, step: int) -> tuple[dict[str, Any], str | None]:
    """(manifest, None), or ({}, what is wrong with it): its step, format and the names it lists."""
    manifest_path = path / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        return {}, "no manifest (the write did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return {}, f"manifest is corrupt ({_first_line(exc)})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return {}, "manifest is corrupt (not a JSON object with a 'files' mapping)"
    if not _is_int(manifest.get("step")) or manifest["step"] != step:
        return {}, f"manifest is corrupt (it is for step {short(manifest.get('step'))}, the directory for step {step})"
    for name in files:
        if not _is_plain_name(name):
            return {}, f"manifest is corrupt (it lists {short(name)}, which is not a plain file name)"
    if manifest.get("format", "single") == "dcp":
        problem = _dcp_names(manifest)
    elif "format" in manifest:
        problem = f"manifest is corrupt (unknown format {short(manifest['format'])}; expected dcp or none)"
    else:
        problem = _names(set(files), REQUIRED_FILES, set(OPTIONAL_FILES))
    return (manifest, None) if problem is None else ({}, problem)


def _names(files: set[str], required: tuple[str, ...], allowed: set[str]) -> str | None:
    unexpected = sorted(files - set(required) - allowed)
    if unexpected:
        return f"manifest is corrupt (it lists files a checkpoint does not have: {', '.join(map(short, unexpected))})"
    missing = [name for name in required if name not in files]
    if missing:
        return f"manifest is corrupt (it does not list {', '.join(missing)})"
    return None


def _dcp_names(manifest: dict[str, Any]) -> str | None:
    """A DCP checkpoint: .metadata, state.json, config.json, one rank file per rank of the writing
    run (manifest `world`) and the ranks' .distcp shards."""
    world = manifest.get("world")
    if not isinstance(world, int) or isinstance(world, bool) or not 1 <= world <= MAX_WORLD:
        return f"manifest is corrupt (world {short(world)}; expected the writing run's process count)"
    files = set(manifest["files"])
    shards = {name for name in files if _DCP_SHARD.match(name)}
    if not shards:
        return "manifest is corrupt (it lists no .distcp shard)"
    required = (*DCP_REQUIRED, *(rank_file(rank) for rank in range(world)))
    return _names(files, required, shards)


def _check_file(path: Path, name: str, info: object, hash_it: bool = True) -> str | None:
    """What is wrong with one listed file (its manifest entry, kind, size, sha256), or None."""
    if not (
        isinstance(info, dict)
        and _is_int(info.get("bytes"))
        and info["bytes"] >= 0
        and isinstance(info.get("sha256"), str)
        and _SHA256.match(info["sha256"])
    ):
        return f"manifest is corrupt (its entry for {name} needs integer bytes and a sha256)"
    file = path / name
    if file.is_symlink() or (file.exists() and not file.is_file()):
        return f"{name} is not a plain file"
    if not file.exists():
        return f"{name} is missing"
    try:
        size = file.stat().st_size
        if size < info["bytes"]:
            return f"{name} is truncated ({size} of {info['bytes']} bytes)"
        if size != info["bytes"]:
            return f"{name} has the wrong size ({size} bytes, the manifest says {info['bytes']})"
        if hash_it and file_sha256(file) != info["sha256"]:
            return f"{name} is corrupted (sha256 mismatch)"
    except OSError as exc:
        return f"{name} cannot be read: {exc.strerror or exc}"
    return None


def file_entry(file: Path) -> dict[str, Any]:
    """A file's manifest entry: its size and sha256."""
    return {"bytes": file.stat().st_size, "sha256": file_sha256(file)}


def latest_good(directory: Path) -> Path | None:
    """The newest checkpoint that verifies; broken newer ones are reported, not deleted."""
    for path in reversed(list_checkpoints(directory)):
        problem = verify(path)
        if problem is None:
            return path
        warnings.warn(f"skipping checkpoint {path}: {problem}; falling back to the previous one", stacklevel=2)
    return None


def read_state(path: Path) -> dict[str, Any]:
    """state.json of a checkpoint, checked: a JSON object with this directory's integer `step`,
    integer `tokens_seen` >= 0 and an `rng` object holding torch's generator state."""
    file = path / "state.json"
    try:
        state = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MidtrainError.single(f"checkpoint state is not readable JSON: {_first_line(exc)}", file=file) from None

    def bad(field: str, expected: str, found: object) -> MidtrainError:
        return MidtrainError.single(
            f"checkpoint state: field {field} is not valid", file=file, expected=expected, found=short(found)
        )

    if not isinstance(state, dict):
        raise bad("(the whole file)", "a JSON object", state)
    step = step_of(path)
    if not _is_int(state.get("step")) or state["step"] != step:
        raise bad("step", f"{step} (the directory's step)", state.get("step"))
    if not _is_int(state.get("tokens_seen")) or state["tokens_seen"] < 0:
        raise bad("tokens_seen", "an integer >= 0", state.get("tokens_seen"))
    if "parameters" in state and (not _is_int(state["parameters"]) or state["parameters"] < 0):
        raise bad("parameters", "an integer >= 0", state["parameters"])
    rng = state.get("rng")
    if not isinstance(rng, dict):
        raise bad("rng", "an object with the RNG states", rng)
    import torch

    size = torch.get_rng_state().numel()
    if not _bytes_list(rng.get("torch"), size):
        raise bad("rng.torch", f"a list of {size} integers 0..255", rng.get("torch"))
    cuda = rng.get("cuda")
    if cuda is not None and not (isinstance(cuda, list) and all(_bytes_list(item) for item in cuda)):
        raise bad("rng.cuda", "a list of lists of integers 0..255", cuda)
    return state


def _bytes_list(value: object, size: int | None = None) -> bool:
    return (
        isinstance(value, list)
        and (size is None or len(value) == size)
        and all(_is_int(item) and 0 <= item <= 255 for item in value)
    )


def _check_tensors(tensors: object, file: Path) -> dict[str, Any]:
    import torch

    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise MidtrainError.single("checkpoint file does not hold named tensors", file=file)
    return tensors


def _check_optimizer(state: object, file: Path) -> dict[str, Any]:
    """The layout of a (full, name-keyed) optimizer state dict; the trainer checks it against the model."""
    import torch

    def bad(what: str) -> MidtrainError:
        return MidtrainError.single(f"optimizer state is not valid: {what}", file=file)

    if (
        not isinstance(state, dict)
        or not isinstance(state.get("state"), dict)
        or not isinstance(state.get("param_groups"), list)
    ):
        raise bad("expected a mapping with 'state' and 'param_groups'")
    for group in state["param_groups"]:
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise bad("every parameter group needs a 'params' list")
    for key, value in state["state"].items():
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (torch.Tensor, int, float)) for k, v in value.items()
        ):
            raise bad(f"the state of {short(key)} is not a mapping of names to tensors")
    return state


def _read(path: Path, name: str, reader: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """One file of a checkpoint, any failure to read it a MidtrainError naming it."""
    file = path / name
    try:
        return reader(file)
    except MidtrainError:
        raise
    except Exception as exc:  # safetensors, unpickling (weights_only) and I/O errors alike
        raise MidtrainError.single(f"checkpoint file cannot be read: {_first_line(exc)}", file=file) from None


def _read_optimizer(path: Path) -> dict[str, Any]:
    import torch

    state = _read(path, "optimizer.pt", lambda f: torch.load(f, map_location="cpu", weights_only=True))
    return _check_optimizer(state, path / "optimizer.pt")


def load_optimizer(path: Path) -> dict[str, Any]:
    """The optimizer state of a verified checkpoint alone (another run continuing it: optimizer_from)."""
    problem = verify(path)
    if problem is not None:
        raise MidtrainError.single(f"checkpoint is not usable: {problem}", file=path)
    read_state(path)
    return _read_optimizer(path)


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(model tensors, optimizer state, state.json, averages or None) of a verified checkpoint.

    Raises MidtrainError naming the file for anything that does not verify, parse or validate."""
    from safetensors.torch import load_file

    problem = verify(path)
    if problem is not None:
        raise MidtrainError.single(f"checkpoint is not usable: {problem}", file=path)
    state = read_state(path)
    model_state = _check_tensors(
        _read(path, "model.safetensors", lambda f: load_file(str(f))), path / "model.safetensors"
    )
    optimizer_state = _read_optimizer(path)
    averages = None
    if (path / AVERAGES).exists():
        averages = _check_tensors(_read(path, AVERAGES, lambda f: load_file(str(f))), path / AVERAGES)
    return model_state, optimizer_state, state, averages
