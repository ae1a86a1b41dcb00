"""A stream's documents cut into contiguous parts, one per data-engine task, and one part read back.

A stream is an ordered sequence of rows: a built-in corpus file, a registry source's `files` (in the
order `expand_files` gives), or a hub dataset's split. Part r of T covers a contiguous stretch of
that sequence, and parts 0..T-1 read one after the other give exactly the rows, in exactly the
order, that the single-process path reads. So packing each part separately and concatenating the
packed parts in part order gives the single-process shard byte for byte, whatever T is.

How a stream is cut:

- files are laid end to end and weighed in bytes (a parquet row group by its uncompressed size);
  task r takes the stretch [r·W/T, (r+1)·W/T) of the total weight W;
- a JSON-lines file is cut inside: a line belongs to the task whose stretch holds its first byte
  (a reader seeks to its start and skips the line it lands in, unless that line starts there);
- a parquet row group and a text file (one document) are not cut: each goes whole to the task
  whose stretch holds its first byte;
- a hub dataset is cut by rows of its prepared Arrow table (`load_dataset(..., streaming=False)`,
  made once by the driver and memory-mapped by every task): task r reads rows [r·N/T, (r+1)·N/T).

Origins and parts are plain JSON, stored in the engine's plan file.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError


def corpus_origin(path: Path) -> dict[str, Any]:
    """A built-in corpus file: JSON lines with `id` and `text`."""
    return {"kind": "corpus", "file": str(Path(path).resolve())}


def source_origin(name: str, source: Any, base: Path | None) -> dict[str, Any]:
    """A registry source (its `files`, or its hub id); files are expanded here, once."""
    from midtrain.data.sources import expand_files

    spec = {"name": name, "source": source.model_dump(mode="json")}
    if source.files:
        files = [str(path.resolve()) for path in expand_files(source.files, base)]
        return {"kind": "files", **spec, "files": files, "origin": ", ".join(source.files)}
    if source.hub_id:
        import datasets

        return {"kind": "hub", **spec, "cache_dir": str(datasets.config.HF_DATASETS_CACHE)}
    raise MidtrainError.single(
        f"data source {name!r} has no public release (no hub_id) and no `files`; at this scale point it at "
        "your own copy with `files:` in registry/sources.yaml"
    )


def plan_parts(origin: dict[str, Any], tasks: int) -> list[dict[str, Any]]:
    """The part of each of `tasks` tasks."""
    if origin["kind"] == "hub":
        rows = len(_hub_dataset(json.dumps(origin, sort_keys=True)))
        return [{"rows": [r * rows // tasks, (r + 1) * rows // tasks]} for r in range(tasks)]
    files = [origin["file"]] if origin["kind"] == "corpus" else origin["files"]
    atoms = [atom for number, path in enumerate(files) for atom in _atoms(number, Path(path))]
    total = sum(atom["weight"] for atom in atoms)
    bounds = [r * total // tasks for r in range(tasks + 1)]
    parts: list[dict[str, Any]] = [{"pieces": []} for _ in range(tasks)]
    offset = 0
    for atom in atoms:
        weight = atom.pop("weight")
        if atom["kind"] == "jsonl":
            for r in range(tasks):
                start, end = max(bounds[r] - offset, 0), min(bounds[r + 1] - offset, weight)
                if start < end:
                    parts[r]["pieces"].append({**atom, "start": start, "end": end})
        else:
            parts[min(bisect_right(bounds, offset) - 1, tasks - 1)]["pieces"].append(atom)
        offset += weight
    return parts


def _atoms(number: int, path: Path) -> list[dict[str, Any]]:
    """The units of one file: the whole file (jsonl, cut later by bytes; text), or its row groups."""
    from midtrain.data.sources import file_kind

    kind = file_kind(path)
    if kind != "parquet":
        return [{"file": number, "kind": kind, "weight": path.stat().st_size}]
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise MidtrainError.single(f"cannot read parquet: {exc}", file=path) from None
    return [
        {"file": number, "kind": "parquet", "row_group": group, "weight": metadata.row_group(group).total_byte_size}
        for group in range(metadata.num_row_groups)
    ]


def read_part(origin: dict[str, Any], part: dict[str, Any]) -> Iterator[tuple[str | None, str]]:
    """(id, text) of the part's documents, in stream order: the corpus row's id, or None for a
    registry source (whose documents are numbered by the caller). Blank source rows are skipped,
    as the single-process path skips them."""
    if origin["kind"] == "corpus":
        path = Path(origin["file"])
        for piece in part["pieces"]:
            for _, raw in _lines(path, piece["start"], piece["end"]):
                row = json.loads(raw)
                yield row["id"], row["text"]
        return
    from midtrain.data.sources import document_text

    source = _source(json.dumps(origin["source"], sort_keys=True))
    if origin["kind"] == "hub":
        start, end = part["rows"]
        for row in _hub_dataset(json.dumps(origin, sort_keys=True)).select(range(start, end)):
            text = document_text(row, source, source.hub_id)
            if text is not None:
                yield None, text
        return
    for path, row in _rows(origin, part):
        text = document_text(row, source, str(path))
        if text is not None:
            yield None, text


def _rows(origin: dict[str, Any], part: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    from midtrain.data.sources import parse_jsonl_line, read_parquet_rows, read_text_rows

    for piece in part["pieces"]:
        path = Path(origin["files"][piece["file"]])
        if piece["kind"] == "text":
            yield from ((path, row) for row in read_text_rows(path))
        elif piece["kind"] == "parquet":
            yield from ((path, row) for row in read_parquet_rows(path, row_groups=[piece["row_group"]]))
        else:
            for position, raw in _lines(path, piece["start"], piece["end"]):
                row = parse_jsonl_line(raw, path, lambda: _line_number(path, position))  # noqa: B023
                if row is not None:
                    yield path, row


def _lines(path: Path, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(position, raw line) of every line of `path` that starts in [start, end)."""
    with open(path, "rb") as handle:
        if start > 0:
            handle.seek(start - 1)
            handle.readline()  # the rest of the line holding byte start-1: it belongs to the part before
        position = handle.tell()
        while position < end:
            raw = handle.readline()
            if not raw:
                return
            yield position, raw
            position += len(raw)


def _line_number(path: Path, position: int) -> int:
    """1-based line number of the line starting at byte `position` (only computed for an error)."""
    count = 0
    with open(path, "rb") as handle:
        while position > 0:
            block = handle.read(min(position, 1 << 22))
            if not block:
                break
            count += block.count(b"\n")
            position -= len(block)
    return count + 1


@lru_cache(maxsize=16)
def _source(spec: str) -> Any:
    from midtrain.schema.registry import DataSource

    return DataSource.model_validate(json.loads(spec))


@lru_cache(maxsize=4)
def _hub_dataset(spec: str) -> Any:
    """The prepared (Arrow, memory-mapped) dataset of a hub origin; the first call prepares it."""
    from midtrain.data.sources import load_hub_dataset

    origin = json.loads(spec)
    source = origin["source"]
    return load_hub_dataset(
        source["hub_id"],
        source.get("subset"),
        source.get("split") or "train",
        source.get("revision"),
        streaming=False,
        cache_dir=origin["cache_dir"],
    )
