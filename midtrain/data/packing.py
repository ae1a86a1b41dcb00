"""Tokenize and pack documents into memory-mapped token shards.

One stream (a source's split) becomes two files: `<name>.bin`, the concatenated token ids with EOS
after every document (uint16 when the vocabulary fits, else uint32), and `<name>.idx`, the int64
offset where each document starts (so per-document attention masks are possible). A manifest
entry (tokens, documents, dtype, sha256 of both files) is written last: a shard without its entry
is unfinished and is rebuilt. Documents are read and encoded in batches, never all at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from midtrain.errors import MidtrainError
from midtrain.io import atomic_writer, file_sha256, write_json

if TYPE_CHECKING:
    from midtrain.data.tokenizer import FastTokenizer

BATCH_DOCS = 512
MANIFEST = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65_536 else np.dtype(np.uint32)


def _batches(docs: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_packed(
    docs: Iterable[str],
    tokenizer: FastTokenizer,
    bin_path: Path,
    idx_path: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Encode `docs` into `bin_path` (tokens, EOS after each document) and `idx_path` (int64 document
    starts), each written atomically; returns (tokens, documents). No documents: two empty files."""
    dtype = token_dtype(tokenizer.vocab_size)
    eos = tokenizer.eos_id
    tokens = 0
    documents = 0
    offsets: list[np.ndarray] = []
    with atomic_writer(bin_path, "wb") as handle:
        for batch in _batches(docs, BATCH_DOCS):
            encoded = tokenizer.encode_batch(batch)
            lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
            flat = np.empty(int(lengths.sum()), dtype=dtype)
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            for start, ids in zip(starts.tolist(), encoded):
                end = start + len(ids)
                flat[start:end] = ids
                flat[end] = eos
            handle.write(flat.tobytes())
            offsets.append(starts + tokens)
            tokens += int(flat.size)
            documents += len(batch)
            if progress:
                progress(len(batch), int(flat.size))
    with atomic_writer(idx_path, "wb") as handle:
        handle.write(np.concatenate(offsets).astype(np.int64).tobytes() if offsets else b"")
    return tokens, documents


def pack_stream(
    docs: Iterable[str],
    tokenizer: FastTokenizer,
    out_dir: Path,
    name: str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Encode `docs` and write `<name>.bin` / `<name>.idx` atomically; returns the manifest entry."""
    bin_path, idx_path = out_dir / f"{name}.bin", out_dir / f"{name}.idx"
    tokens, documents = write_packed(docs, tokenizer, bin_path, idx_path, progress)
    if documents == 0:
        bin_path.unlink(missing_ok=True)
        idx_path.unlink(missing_ok=True)
        raise MidtrainError.single(f"stream {name!r} has no documents to pack")
    return _entry(name, tokens, documents, token_dtype(tokenizer.vocab_size), bin_path, idx_path)


def _entry(
    name: str, tokens: int, documents: int, dtype: np.dtype, bin_path: Path, idx_path: Path, digests: dict | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "tokens": tokens,
        "documents": documents,
        "dtype": dtype.name,
        "bin": bin_path.name,
        "idx": idx_path.name,
        "sha256": digests or {"bin": file_sha256(bin_path), "idx": file_sha256(idx_path)},
    }


def merge_packed(parts: list[tuple[Path, Path]], out_dir: Path, name: str, dtype: np.dtype) -> dict[str, Any]:
    """Concatenate packed parts ((bin, idx) pairs written by `write_packed`, in order) into
    `<name>.bin` / `<name>.idx`: byte for byte what `pack_stream` writes for the same documents in
    the same order. Streams block by block; returns the manifest entry."""
    import hashlib

    bin_path, idx_path = out_dir / f"{name}.bin", out_dir / f"{name}.idx"
    digests = {"bin": hashlib.sha256(), "idx": hashlib.sha256()}
    tokens = documents = 0
    with atomic_writer(bin_path, "wb") as out_bin, atomic_writer(idx_path, "wb") as out_idx:
        for part_bin, part_idx in parts:
            starts = np.fromfile(part_idx, dtype=np.int64) + tokens
            out_idx.write(starts.tobytes())
            digests["idx"].update(starts.tobytes())
            with open(part_bin, "rb") as handle:
                while block := handle.read(1 << 22):
                    out_bin.write(block)
                    digests["bin"].update(block)
                    tokens += len(block) // dtype.itemsize
            documents += int(starts.size)
    if documents == 0:
        bin_path.unlink(missing_ok=True)
        idx_path.unlink(missing_ok=True)
        raise MidtrainError.single(f"stream {name!r} has no documents to pack")
    hexes = {key: digest.hexdigest() for key, digest in digests.items()}
    return _entry(name, tokens, documents, dtype, bin_path, idx_path, hexes)


@dataclass
class Shard:
    """A packed stream opened read-only as a memory map."""

    name: str
    tokens: np.ndarray
    doc_starts: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.size)


DTYPES = ("uint16", "uint32")


def _plain_name(value: object, path: Path, field: str) -> str:
    """A file name that stays inside the shard folder: no separators, no '..', not hidden."""
    if (
        not isinstance(value, str)
        or not value
        or "/" in value
        or "\\" in value
        or value.startswith(".")
        or "\0" in value
    ):
        raise MidtrainError.single(
            f"shard manifest field {field} must be a plain file name inside the shard folder",
            file=path,
            expected="e.g. math.train.bin",
            found=repr(value)[:80],
        )
    return value


def read_manifest(shard_dir: Path) -> dict[str, Any]:
    """The shard manifest, checked: every listed file is a plain name inside `shard_dir`, with a
    known dtype and a non-negative token count."""
    path = shard_dir / MANIFEST
    if not path.exists():
        raise MidtrainError.single("no shard manifest here; run `midtrain data prepare` first", file=path)
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MidtrainError.single(f"shard manifest is corrupt: {exc.msg}", file=path, line=exc.lineno) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MidtrainError.single(f"cannot read the shard manifest: {exc}", file=path) from None
    streams = manifest.get("streams") if isinstance(manifest, dict) else None
    if not isinstance(streams, dict):
        raise MidtrainError.single("shard manifest has no `streams` mapping", file=path)
    for name, entry in streams.items():
        if not isinstance(entry, dict):
            raise MidtrainError.single(f"shard manifest entry streams.{name} is not a mapping", file=path)
        for field in ("bin", "idx"):
            _plain_name(entry.get(field), path, f"streams.{name}.{field}")
        if entry.get("dtype") not in DTYPES:
            raise MidtrainError.single(
                f"shard manifest field streams.{name}.dtype",
                file=path,
                expected=" or ".join(DTYPES),
                found=repr(entry.get("dtype"))[:40],
            )
        tokens = entry.get("tokens")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise MidtrainError.single(
                f"shard manifest field streams.{name}.tokens",
                file=path,
                expected="an integer ≥ 0",
                found=repr(tokens)[:40],
            )
    return manifest


def write_manifest(shard_dir: Path, manifest: dict[str, Any]) -> None:
    write_json(shard_dir / MANIFEST, manifest)


def open_shard(shard_dir: Path, entry: dict[str, Any]) -> Shard:
    bin_path = shard_dir / _plain_name(entry["bin"], shard_dir / MANIFEST, "bin")
    idx_path = shard_dir / _plain_name(entry["idx"], shard_dir / MANIFEST, "idx")
    for path in (bin_path, idx_path):
        if not path.exists():
            raise MidtrainError.single(
                "shard listed in the manifest is missing; rerun `midtrain data prepare`", file=path
            )
    expected = entry["tokens"] * np.dtype(entry["dtype"]).itemsize
    if bin_path.stat().st_size != expected:
        raise MidtrainError.single(
            "shard size does not match its manifest (truncated or changed); rerun `midtrain data prepare`",
            file=bin_path,
            expected=f"{expected} bytes",
            found=f"{bin_path.stat().st_size} bytes",
        )
    tokens = np.memmap(bin_path, dtype=np.dtype(entry["dtype"]), mode="r")
    starts = np.fromfile(idx_path, dtype=np.int64)
    return Shard(entry["name"], tokens, starts)


def shard_is_complete(shard_dir: Path, entry: dict[str, Any] | None, verify_hash: bool = False) -> bool:
    """True when both files exist with the recorded size (and, if asked, hash)."""
    if not entry:
        return False
    try:
        bin_path = shard_dir / _plain_name(entry.get("bin"), shard_dir / MANIFEST, "bin")
        idx_path = shard_dir / _plain_name(entry.get("idx"), shard_dir / MANIFEST, "idx")
    except MidtrainError:
        return False
    if not (bin_path.is_file() and idx_path.is_file()):
        return False
    if bin_path.stat().st_size != entry["tokens"] * np.dtype(entry["dtype"]).itemsize:
        return False
    if verify_hash:
        return file_sha256(bin_path) == entry["sha256"]["bin"] and file_sha256(idx_path) == entry["sha256"]["idx"]
    return True
