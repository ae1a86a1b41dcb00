"""Checkpoints: atomic, verified, never unpickling arbitrary objects.

A checkpoint is a directory `step-000120/` holding `model.safetensors`, `optimizer.pt` (tensors and
plain containers only, loaded with `weights_only=True`), optional `averages.safetensors` (EMA /
Polyak), `state.json` (step, tokens seen, RNG states, ...) and `manifest.json` with the sha256 of
every file, written last. The directory appears under its final name only when complete (write to
a temporary name, fsync, rename). On resume the newest checkpoint that verifies is used; broken
ones are reported and skipped, so the previous good one is never lost (keep-last-N >= 2).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError
from midtrain.io import atomic_dir

STEP_DIR = re.compile(r"^step-(\d{7})$")


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


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


def save(directory: Path, step: int, model_state: dict[str, Any], optimizer_state: dict[str, Any],
         state: dict[str, Any], averages: dict[str, Any] | None = None, keep_last: int = 2) -> Path:
    import torch
    from safetensors.torch import save_file

    target = directory / f"step-{step:07d}"
    with atomic_dir(target) as tmp:
        save_file(unshare(model_state), str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        if averages:
            save_file(unshare(averages), str(tmp / "averages.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1))
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha(p)} for p in sorted(tmp.iterdir())}
        (tmp / "manifest.json").write_text(json.dumps({"step": step, "files": files}, indent=1))
    for old in list_checkpoints(directory)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


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
    return sorted((p for p in directory.iterdir() if p.is_dir() and STEP_DIR.match(p.name)), key=lambda p: p.name)


def verify(path: Path) -> str | None:
    """None when the checkpoint is complete and intact, else what is wrong with it."""
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        return "no manifest (the write did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return "manifest is corrupt"
    for name, info in manifest["files"].items():
        file = path / name
        if not file.exists():
            return f"{name} is missing"
        if file.stat().st_size != info["bytes"]:
            return f"{name} is truncated ({file.stat().st_size} of {info['bytes']} bytes)"
        if _sha(file) != info["sha256"]:
            return f"{name} is corrupted (sha256 mismatch)"
    return None


def latest_good(directory: Path) -> Path | None:
    """The newest checkpoint that verifies; broken newer ones are reported, not deleted."""
    for path in reversed(list_checkpoints(directory)):
        problem = verify(path)
        if problem is None:
            return path
        warnings.warn(f"skipping checkpoint {path}: {problem}; falling back to the previous one", stacklevel=2)
    return None


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(model tensors, optimizer state, state.json, averages or None) of a verified checkpoint."""
    import torch
    from safetensors.torch import load_file

    problem = verify(path)
    if problem is not None:
        raise MidtrainError.single(f"checkpoint is not usable: {problem}", file=path)
    model_state = load_file(str(path / "model.safetensors"))
    optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    state = json.loads((path / "state.json").read_text())
    averages = load_file(str(path / "averages.safetensors")) if (path / "averages.safetensors").exists() else None
    return model_state, optimizer_state, state, averages
