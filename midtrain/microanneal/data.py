"""Streams a microanneal adds to the plan's data: the degraded `math-noisy` candidate and the
registry sources its arms name (read for real, decontaminated against the evaluation sets, packed
with the same tokenizer).

`math-noisy` holds the training math problems with their worked steps intact and a wrong final
answer negated: it looks like math, teaches wrong answers, and the answer-token loss catches it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError

NOISY_VERSION = 4  # part of the stream's identity: a change to the generator repacks it
ANSWER = re.compile(r"\nAnswer: (-?\d+)\s*$")


def wrong_answer(answer: int) -> int:
    """The answer with its sign flipped (a generator with a sign bug): never right, and visible to a
    model too small to check the arithmetic. A wrong answer of the same form as the right ones (off by
    a little, or another problem's) is invisible to the 1M-parameter stand-in, which cannot yet copy
    a number from the last step; measured, such arms matched the clean math arm on every metric."""
    return -answer if answer else -1


def noisy_math(rows: Iterator[dict[str, Any]], seed: int) -> Iterator[tuple[str, str]]:
    """(id, text) of each training problem with its worked steps intact and its final answer wrong."""
    for row in rows:
        text = row["text"]
        match = ANSWER.search(text)
        if match is None:
            continue
        wrong = wrong_answer(int(match.group(1)))
        yield f"math-noisy:{row['id']}", text[: match.start()] + f"\nAnswer: {wrong}"


def add_streams(data: Path, noisy: bool, sources: list[str], project: Path, seed: int, progress: bool = True) -> None:
    """Pack the extra streams into `data` (a prepared data directory); unchanged ones are kept."""
    from midtrain.catalog import load_catalog
    from midtrain.data.decontam import Report, filter_documents
    from midtrain.data.packing import pack_stream, read_manifest, shard_is_complete, write_manifest
    from midtrain.data.prepare import PrepareOptions, _hash, _read_rows, build_eval_index, prepare_corpora
    from midtrain.data.sources import iter_documents
    from midtrain.data.tokenizer import load_tokenizer
    from midtrain.io import file_sha256, write_json
    from midtrain.progress import progress_bar

    if not noisy and not sources:
        return
    options = PrepareOptions(out=data, seed=seed, progress=False)
    corpora = prepare_corpora(options)  # already there: only checked
    shard_dir = data / "shards"
    manifest = read_manifest(shard_dir)
    tokenizer = load_tokenizer(data / "tokenizer")
    tokenizer_id = file_sha256(data / "tokenizer" / "tokenizer.json")
    registry = load_catalog(project).registry if sources else None
    index = build_eval_index(options, corpora)
    report_path = data / "decontam-microanneal.json"
    report = Report(options.ngram, options.threshold, options.action)
    jobs: list[tuple[str, dict[str, Any], Any]] = []
    if noisy:
        math_train = data / "corpora" / corpora["math"]["splits"]["train"]["file"]
        inputs = {
            "noisy": corpora["math"]["splits"]["train"]["sha256"],
            "version": NOISY_VERSION,
            "tokenizer": tokenizer_id,
            "seed": seed,
        }
        jobs.append(("math-noisy", inputs, lambda: noisy_math(_read_rows(math_train), seed)))
    for name in sources:
        assert registry is not None
        if name not in registry.sources:
            raise MidtrainError.single(f"source {name!r} is not in registry/sources.yaml", file=project / "registry")
        source = registry.sources[name]
        inputs = {"source": source.model_dump(mode="json"), "tokenizer": tokenizer_id}

        def documents(source: Any = source, name: str = name) -> Iterator[tuple[str, str]]:
            texts = iter_documents(source, name, base=project)
            return filter_documents(((f"{name}:{i}", t) for i, t in enumerate(texts)), index, report, name)

        jobs.append((name, inputs, documents))
    for name, inputs, documents in jobs:
        stream = f"{name}.train"
        key = _hash(inputs)
        entry = manifest["streams"].get(stream)
        if entry and entry.get("inputs") == key and shard_is_complete(shard_dir, entry):
            continue
        with progress_bar(f"tokenize + pack {name}", None, unit=" docs", enabled=progress) as advance:
            entry = pack_stream(
                (text for _, text in documents()), tokenizer, shard_dir, stream, progress=lambda docs, _t: advance(docs)
            )
        entry["inputs"] = key
        entry["source"] = {"microanneal": name}
        manifest["streams"][stream] = entry
        write_json(report_path, report.to_json())  # counts first: a kill after the manifest never loses them
        write_manifest(shard_dir, manifest)
