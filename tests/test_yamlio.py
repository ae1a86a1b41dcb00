"""Malformed YAML files end in a located message, never a traceback or a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from midtrain.errors import MidtrainError
from midtrain.yamlio import MAX_FILE_BYTES, load_yaml


def load(tmp_path: Path, content: bytes | str, name: str = "r.yaml"):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return load_yaml(path)


def problem(tmp_path: Path, content: bytes | str):  # type: ignore[no-untyped-def]
    with pytest.raises(MidtrainError) as info:
        load(tmp_path, content)
    assert len(info.value.problems) == 1
    return info.value.problems[0]


def test_lines_are_recorded(tmp_path: Path) -> None:
    data, lines = load(tmp_path, "a: 1\nstages:\n  - name: x\n    tokens: 50B\n")
    assert data == {"a": 1, "stages": [{"name": "x", "tokens": "50B"}]}
    assert lines.line_for(("stages", 0, "tokens")) == 4
    assert lines.line_for(("stages", 0, "tokens", "deeper")) == 4


def test_syntax_error(tmp_path: Path) -> None:
    p = problem(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")
    assert "YAML syntax error" in p.message and p.line is not None and p.file is not None


def test_duplicate_key(tmp_path: Path) -> None:
    p = problem(tmp_path, "id: a\ntitle: x\nid: b\n")
    assert "duplicate key" in p.message and p.line == 3


def test_tab_indentation(tmp_path: Path) -> None:
    p = problem(tmp_path, "base:\n\tmodel: x\n")
    assert "tab" in p.message and p.line == 2


def test_tab_inside_quoted_string_is_fine(tmp_path: Path) -> None:
    data, _ = load(tmp_path, 'note: "a\tb"\n')
    assert data == {"note": "a\tb"}


@pytest.mark.parametrize(
    "content",
    [
        "a: !!python/object/apply:os.system ['echo pwned']\n",
        "a: !!python/name:os.system\n",
        "a: !custom 3\n",
    ],
)
def test_unsafe_tags_rejected(tmp_path: Path, content: str) -> None:
    p = problem(tmp_path, content)
    assert "unsupported YAML tag" in p.message and p.line == 1


def test_standard_tag_allowed(tmp_path: Path) -> None:
    data, _ = load(tmp_path, "a: !!str 123\n")
    assert data == {"a": "123"}


def test_alias_bomb(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    p = problem(tmp_path, "\n".join(lines) + "\n")
    assert "alias bomb" in p.message


def test_small_aliases_are_fine(tmp_path: Path) -> None:
    data, _ = load(tmp_path, "opt: &o {lr: 1}\nagain: *o\n")
    assert data["again"] == {"lr": 1}


def test_huge_file(tmp_path: Path) -> None:
    p = problem(tmp_path, "a: " + "x" * (MAX_FILE_BYTES + 10) + "\n")
    assert "too large" in p.message and p.expected and p.found


def test_binary_file(tmp_path: Path) -> None:
    p = problem(tmp_path, b"a: 1\n\x00\x01\x02")
    assert "binary" in p.message and p.line == 2


def test_non_utf8_file(tmp_path: Path) -> None:
    p = problem(tmp_path, b"a: 1\nb: caf" + b"\xe9\n")
    assert "UTF-8" in p.message and p.line == 2 and "0xe9" in (p.found or "")


@pytest.mark.parametrize("content", ["", "   \n\n", "\ufeff"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    p = problem(tmp_path, content)
    assert "empty" in p.message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(MidtrainError, match="is a directory"):
        load_yaml(folder)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MidtrainError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_complex_key_rejected(tmp_path: Path) -> None:
    p = problem(tmp_path, "? [a, b]\n: 1\n")
    assert "plain scalars" in p.message
