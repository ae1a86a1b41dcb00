from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from midtrain.data import packing
from midtrain.data.packing import open_shard, pack_stream, read_manifest
from midtrain.data.prepare import PrepareOptions, prepare_tiny
from midtrain.data.tokenizer import EOS, load_tokenizer
from midtrain.errors import MidtrainError
from tests.conftest import SMALL


def test_tokenizer_loads_with_autotokenizer(prepared: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(prepared / "tokenizer"))
    ours = load_tokenizer(prepared / "tokenizer")
    text = "def f(x):\n    return x + 1  # café"
    assert hf.decode(hf(text)["input_ids"]) == text
    assert hf(text)["input_ids"] == ours.encode(text)
    assert hf.eos_token == EOS and ours.vocab_size == 512


def test_shards_have_eos_between_documents_and_offsets(prepared: Path) -> None:
    manifest = read_manifest(prepared / "shards")
    entry = manifest["streams"]["math.heldout"]
    shard = open_shard(prepared / "shards", entry)
    eos = manifest["tokenizer"]["eos_id"]
    assert shard.tokens.dtype == np.uint16 and len(shard) == entry["tokens"]
    assert shard.doc_starts.size == entry["documents"]
    ends = np.append(shard.doc_starts[1:], len(shard)) - 1
    assert (shard.tokens[ends] == eos).all()
    assert int((shard.tokens == eos).sum()) == entry["documents"]
    tokenizer = load_tokenizer(prepared / "tokenizer")
    first = tokenizer.decode(shard.tokens[: ends[0]].tolist())
    row = json.loads((prepared / "corpora" / "math.heldout.jsonl").open().readline())
    assert first == row["text"]


def test_same_inputs_give_byte_identical_shards(prepared: Path, tmp_path: Path) -> None:
    prepare_tiny(PrepareOptions(out=tmp_path, vocab_size=512, sizes=SMALL, progress=False))
    a = read_manifest(prepared / "shards")["streams"]
    b = read_manifest(tmp_path / "shards")["streams"]
    assert {k: v["sha256"] for k, v in a.items()} == {k: v["sha256"] for k, v in b.items()}
    for entry in b.values():
        assert packing.file_sha256(tmp_path / "shards" / entry["bin"]) == entry["sha256"]["bin"]


def test_prepare_is_resumable(tmp_path: Path) -> None:
    options = PrepareOptions(out=tmp_path, vocab_size=512, sizes=SMALL, progress=False)
    prepare_tiny(options)
    shard_dir = tmp_path / "shards"
    stamps = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.bin")}
    prepare_tiny(options)  # nothing changed: nothing is redone
    assert stamps == {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.bin")}
    # A shard that was cut short (e.g. a killed copy) is detected and rebuilt.
    victim = shard_dir / "code.train.bin"
    victim.write_bytes(victim.read_bytes()[:1000])
    manifest = prepare_tiny(options)
    assert victim.stat().st_size == manifest["streams"]["code.train"]["tokens"] * 2
    assert stamps["prose.train.bin"] == (shard_dir / "prose.train.bin").stat().st_mtime_ns


def test_truncated_shard_gives_clear_error(prepared: Path, tmp_path: Path) -> None:
    entry = dict(read_manifest(prepared / "shards")["streams"]["qa.heldout"])
    (tmp_path / entry["bin"]).write_bytes((prepared / "shards" / entry["bin"]).read_bytes()[:-10])
    (tmp_path / entry["idx"]).write_bytes((prepared / "shards" / entry["idx"]).read_bytes())
    with pytest.raises(MidtrainError, match="does not match its manifest"):
        open_shard(tmp_path, entry)


def test_disk_full_leaves_no_partial_shard(prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = load_tokenizer(prepared / "tokenizer")
    real = packing.atomic_writer

    class FullDisk:
        def __init__(self, handle):  # type: ignore[no-untyped-def]
            self.handle, self.written = handle, 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > 4000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.handle, name)

    import contextlib

    @contextlib.contextmanager
    def full_writer(path, mode="w", encoding="utf-8"):  # type: ignore[no-untyped-def]
        with real(path, mode, encoding) as handle:
            yield FullDisk(handle)

    monkeypatch.setattr(packing, "atomic_writer", full_writer)
    docs = ["some text about things " * 20] * 200
    with pytest.raises(MidtrainError, match="no space left"):
        pack_stream(docs, tokenizer, tmp_path, "victim")
    assert not list(tmp_path.glob("victim*")) and not list(tmp_path.glob(".victim*"))


def test_empty_stream_is_an_error(prepared: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(prepared / "tokenizer")
    with pytest.raises(MidtrainError, match="no documents"):
        pack_stream([], tokenizer, tmp_path, "empty")
    assert not list(tmp_path.iterdir())


def test_decontamination_report(prepared: Path) -> None:
    report = json.loads((prepared / "decontam.json").read_text())
    assert report["n"] == 13 and set(report["sources"]) == {
        f"{n}.train" for n in ("prose", "code", "math", "qa", "longdoc")
    }
    assert all(v["documents"] > 0 for v in report["sources"].values())
