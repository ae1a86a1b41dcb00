"""Sources: the hub-id path exercised on local dataset directories, local files, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.data.sources import iter_documents
from midtrain.errors import MidtrainError
from midtrain.schema.registry import DataSource


def source(**kw) -> DataSource:  # type: ignore[no-untyped-def]
    args = {"description": "test", "category": "math", "builtin": "math"}
    args.update(kw)
    return DataSource.model_validate(args)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def hub_like(tmp_path: Path) -> Path:
    """A dataset repository laid out like a hub dataset with named subsets (configs)."""
    root = tmp_path / "dolmino-like"
    write_jsonl(root / "math" / "part-0.jsonl", [{"text": f"math doc {i}", "id": i} for i in range(5)])
    write_jsonl(root / "wiki" / "part-0.jsonl", [{"text": f"wiki doc {i}", "id": i} for i in range(3)])
    write_jsonl(root / "qa" / "part-0.jsonl", [{"question": f"q{i}?", "answer": f"a{i}"} for i in range(4)])
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: math\n  data_files:\n  - split: train\n    path: math/*.jsonl\n"
        "- config_name: wiki\n  data_files:\n  - split: train\n    path: wiki/*.jsonl\n"
        "- config_name: qa\n  data_files:\n  - split: train\n    path: qa/*.jsonl\n"
        "---\n# test dataset\n"
    )
    return root


@pytest.mark.parametrize("streaming", [True, False])
def test_hub_id_path_on_a_local_dataset(hub_like: Path, streaming: bool) -> None:
    docs = list(iter_documents(source(hub_id=str(hub_like), subset="math"), "m", streaming=streaming))
    assert docs == [f"math doc {i}" for i in range(5)]
    assert len(list(iter_documents(source(hub_id=str(hub_like), subset="wiki"), "w"))) == 3


def test_template_formats_qa_rows(hub_like: Path) -> None:
    src = source(hub_id=str(hub_like), subset="qa", text_field=None, template="Q: {question}\nA: {answer}")
    assert next(iter_documents(src, "qa")) == "Q: q0?\nA: a0"


def test_missing_text_field_lists_the_fields(hub_like: Path) -> None:
    with pytest.raises(MidtrainError, match="text field 'text' not found") as info:
        list(iter_documents(source(hub_id=str(hub_like), subset="qa"), "qa"))
    assert "answer, question" in info.value.render()


def test_bad_template_field(hub_like: Path) -> None:
    with pytest.raises(MidtrainError, match="template refers to field 'prompt'"):
        list(iter_documents(source(hub_id=str(hub_like), subset="qa", text_field=None, template="{prompt}"), "qa"))


def test_local_files_globs_and_formats(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": ""}, {"text": "two"}])
    (tmp_path / "b.txt").write_text("three")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["four", "five"]}), tmp_path / "c.parquet")
    docs = list(iter_documents(source(files=["*.jsonl", "*.txt", "*.parquet"]), "local", base=tmp_path))
    assert docs == ["one", "two", "three", "four", "five"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no file matches"),
        (lambda d: (d / "x.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n'), "line is not valid UTF-8"),
        (lambda d: (d / "x.txt").write_bytes("utf8 é then latin1 ".encode() + b"\xe9"), "not valid UTF-8"),
        (lambda d: (d / "x.jsonl").write_text('{"text": "a"}\n{broken\n'), "invalid JSON"),
        (lambda d: (d / "x.jsonl").write_text('{"text": ""}\n{"text": "   "}\n'), "no non-empty documents"),
        (lambda d: (d / "x.jsonl").write_text('["not", "an", "object"]\n'), "must be an object"),
        (lambda d: (d / "x.csv").write_text("text\nhello\n"), "unsupported file type"),
        (
            lambda d: (d / "x.jsonl.dvc").write_text("outs:\n- md5: abc\n  path: x.jsonl\n"),
            "tracked by DVC but not present",
        ),
    ],
)
def test_bad_local_input(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    setup(tmp_path)
    pattern = (
        "x.csv" if "unsupported" in message else ("x.txt" if "x.txt" in str(list(tmp_path.iterdir())) else "x.jsonl")
    )
    with pytest.raises(MidtrainError, match=message) as info:
        list(iter_documents(source(files=[pattern]), "bad", base=tmp_path))
    assert "Traceback" not in info.value.render()


def test_line_numbers_in_file_errors(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{oops}\n')
    with pytest.raises(MidtrainError) as info:
        list(iter_documents(source(files=["x.jsonl"]), "bad", base=tmp_path))
    assert info.value.problems[0].line == 3


def test_source_without_origin() -> None:
    with pytest.raises(MidtrainError, match="no public release"):
        list(iter_documents(source(), "proprietary"))
