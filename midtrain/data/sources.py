"""Resolve a registry data source to documents (strings), streaming, with clear errors.

Origins, in order of precedence:
- `files`: local jsonl / json / parquet / txt files or globs (a DVC-tracked path is a local path;
  if only its `.dvc` pointer is present, the error says to `dvc pull` it);
- `hub_id`: `datasets.load_dataset(hub_id, subset, split=..., revision=..., streaming=...)` — the
  same call works on a local dataset directory, which is how it is tested offline;
- the built-in corpus (`builtin`), used at tiny scale.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    from midtrain.schema.registry import DataSource

TEXT_SUFFIXES = (".txt", ".md", ".rst")


def row_text(row: dict[str, Any], text_field: str | None, template: str | None, origin: str) -> str:
    """The document text of one row: a field, or a template over the row's fields (QA/instruction rows)."""
    if template is not None:
        try:
            return template.format(**row)
        except KeyError as exc:
            raise MidtrainError.single(
                f"template refers to field {exc.args[0]!r}, which rows of {origin} do not have",
                expected=f"one of {', '.join(sorted(row))}",
                found=str(exc.args[0]),
            ) from None
    assert text_field is not None
    if text_field not in row:
        raise MidtrainError.single(
            f"text field {text_field!r} not found in rows of {origin}",
            expected=f"one of {', '.join(sorted(row))}",
            found=text_field,
        )
    value = row[text_field]
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False) if value is not None else ""
    return value


def expand_files(patterns: list[str], base: Path | None = None) -> list[Path]:
    """Files of a registry source. A relative path or glob must stay inside the project (`base`):
    registry files may come from others, and `../` must not reach the user's other files. An
    absolute path is the user's explicit choice (the plan says so)."""
    files: list[Path] = []
    root = (base or Path.cwd()).resolve()
    for pattern in patterns:
        relative = not Path(pattern).is_absolute()
        if relative and ".." in Path(pattern).parts:
            raise MidtrainError.single(
                "a relative `files:` path may not climb out of the project with '..'",
                file=Path(pattern),
                expected=f"a path inside {root}, or an absolute path",
                found=pattern,
            )
        full = str(root / pattern) if relative else pattern
        matches = sorted(glob.glob(full, recursive=True))
        if relative:
            outside = [m for m in matches if not Path(m).resolve().is_relative_to(root)]
            if outside:
                raise MidtrainError.single(
                    "a relative `files:` path leads outside the project (through a symlink)",
                    file=Path(outside[0]),
                    expected=f"inside {root}",
                    found=str(Path(outside[0]).resolve()),
                )
        if not matches:
            pointer = Path(full + ".dvc")
            if pointer.exists():
                raise MidtrainError.single(
                    f"data is tracked by DVC but not present here; run `dvc pull {pointer}`", file=Path(full)
                )
            raise MidtrainError.single("no file matches this path or pattern", file=Path(full))
        files.extend(Path(m) for m in matches if Path(m).is_file())
    if not files:
        raise MidtrainError.single(f"the patterns {patterns} match only directories")
    return files


def parse_jsonl_line(raw: bytes, path: Path, line: Callable[[], int]) -> dict[str, Any] | None:
    """One JSON-lines row (None for a blank line); `line()` gives the 1-based line number for errors."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MidtrainError.single(
            "line is not valid UTF-8",
            file=path,
            line=line(),
            expected="UTF-8 text",
            found=f"byte 0x{raw[exc.start]:02x}",
        ) from None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MidtrainError.single(f"invalid JSON: {exc.msg}", file=path, line=line()) from None
    if not isinstance(row, dict):
        raise MidtrainError.single("each JSON line must be an object", file=path, line=line(), found=type(row).__name__)
    return row


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            row = parse_jsonl_line(raw, path, lambda: number)  # noqa: B023 (called before the loop moves on)
            if row is not None:
                yield row


def read_parquet_rows(
    path: Path, batch_rows: int = 1024, row_groups: list[int] | None = None
) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise MidtrainError.single(f"cannot read parquet: {exc}", file=path) from None
    for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=row_groups):
        yield from batch.to_pylist()


def read_text_rows(path: Path) -> Iterator[dict[str, Any]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MidtrainError.single(
            "file is not valid UTF-8 (mixed or legacy encoding?)",
            file=path,
            line=line,
            expected="UTF-8 text",
            found=f"byte 0x{data[exc.start]:02x}",
        ) from None
    yield {"text": text}


def file_kind(path: Path) -> str:
    """How a local source file is read: jsonl (also .json, .ndjson), parquet, or text (one document)."""
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise MidtrainError.single(
        "unsupported file type", file=path, expected="jsonl, json, parquet or txt", found=suffix or "no suffix"
    )


def iter_local_rows(files: list[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in files:
        kind = file_kind(path)
        rows = (
            _read_jsonl(path)
            if kind == "jsonl"
            else read_parquet_rows(path)
            if kind == "parquet"
            else read_text_rows(path)
        )
        for row in rows:
            yield path, row


def load_hub_dataset(
    hub_id: str,
    subset: str | None,
    split: str,
    revision: str | None,
    streaming: bool = True,
    cache_dir: str | None = None,
) -> Any:
    """`datasets.load_dataset` of a hub dataset (or a local dataset directory), with clear errors."""
    import datasets

    try:
        return datasets.load_dataset(
            hub_id, subset, split=split, revision=revision, streaming=streaming, cache_dir=cache_dir
        )
    except FileNotFoundError as exc:
        raise MidtrainError.single(f"dataset {hub_id!r} not found: {exc}") from None
    except ValueError as exc:
        raise MidtrainError.single(
            f"cannot load dataset {hub_id!r} (subset {subset!r}, split {split!r}): {exc}"
        ) from None
    except ConnectionError as exc:
        raise MidtrainError.single(
            f"dataset {hub_id!r} needs the network, which is not available here: {exc}"
        ) from None


def iter_hub_rows(
    hub_id: str, subset: str | None, split: str, revision: str | None, streaming: bool = True
) -> Iterator[dict[str, Any]]:
    """Rows of a hub dataset (or a local dataset directory, which `load_dataset` accepts the same way)."""
    yield from load_hub_dataset(hub_id, subset, split, revision, streaming)


def document_text(row: dict[str, Any], source: DataSource, origin: str) -> str | None:
    """The document of one row of a registry source, or None when it is blank (blank rows are skipped)."""
    text = row_text(row, source.text_field, source.template, origin)
    return text if text.strip() else None


def iter_documents(source: DataSource, name: str, *, base: Path | None = None, streaming: bool = True) -> Iterator[str]:
    """Documents of a registry `DataSource` from its files or hub id. Raises on empty sources."""
    count = 0
    if source.files:
        files = expand_files(source.files, base)
        for path, row in iter_local_rows(files):
            text = document_text(row, source, str(path))
            if text is not None:
                count += 1
                yield text
        origin = ", ".join(source.files)
    elif source.hub_id:
        for row in iter_hub_rows(source.hub_id, source.subset, source.split, source.revision, streaming):
            text = document_text(row, source, source.hub_id)
            if text is not None:
                count += 1
                yield text
        origin = source.hub_id
    else:
        raise MidtrainError.single(
            f"data source {name!r} has no public release (no hub_id) and no `files`; at this scale point it at "
            "your own copy with `files:` in registry/sources.yaml"
        )
    if count == 0:
        raise MidtrainError.single(f"data source {name!r} ({origin}) has no non-empty documents")
