"""Recipes and registry files from others are untrusted: hostile files end in a located message.

A FIFO, a device, a symlink loop, deep nesting, an oversized file or a duplicate id must never hang
a command, read without bound, or print a traceback. The CLI runs in a subprocess with a timeout
(a hang fails the test instead of stalling the suite) and a memory limit (unbounded reading fails
instead of exhausting the machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from midtrain.cli import app
from midtrain.errors import MidtrainError
from midtrain.yamlio import MAX_DEPTH, MAX_FILE_BYTES, MAX_VALUES, check_nesting, load_yaml

OLMO = Path("olmo-2") / "olmo-2-1124-7b.yaml"
CAP = f"{MAX_FILE_BYTES // 1024} KiB"
HANG_LIMIT_S = 120  # far above a normal run (about a second); only a hang or a quadratic pass reaches it

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
needs_symlink = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX symlinks")


def _limit_memory() -> None:
    import resource

    limit = 2 << 30  # 2 GiB of address space: plenty for the browsing commands, not for /dev/zero
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def midtrain(*args: str, code: int) -> str:
    """Run the console command on the fixture's copy ($MIDTRAIN_HOME); returns stdout + stderr."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "midtrain", *args],
            capture_output=True,
            text=True,
            timeout=HANG_LIMIT_S,
            preexec_fn=_limit_memory if sys.platform != "win32" else None,
            env={**os.environ, "COLUMNS": "160"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`midtrain {' '.join(args)}` did not finish within {HANG_LIMIT_S} s (hang?)")
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == code, (proc.returncode, output[-3000:])
    return output


def root_of(repo: Path) -> Path:
    """The catalogue root as the CLI names it (MIDTRAIN_HOME resolved)."""
    return repo.resolve()


# ---------------------------------------------------------------- not regular files


@needs_fifo
@pytest.mark.parametrize("command, code", [("list", 2), ("validate", 1), ("show", 2)])
def test_fifo_among_recipes_is_named_and_never_opened(repo: Path, command: str, code: int) -> None:
    fifo = root_of(repo) / "recipes" / "olmo-2" / "stuck.yaml"
    os.mkfifo(fifo)
    args = [command, "olmo-2-1124-7b"] if command == "show" else [command]
    out = midtrain(*args, code=code)
    assert f"{fifo}: not a regular file" in out and "FIFO" in out


@needs_fifo
@pytest.mark.parametrize("command, code", [("list", 2), ("validate", 1)])
def test_fifo_among_registry_files_is_named_and_never_opened(repo: Path, command: str, code: int) -> None:
    fifo = root_of(repo) / "registry" / "sources" / "stuck.yaml"
    os.mkfifo(fifo)
    out = midtrain(command, code=code)
    assert f"{fifo}: not a regular file" in out and "FIFO" in out


@needs_fifo
def test_fifo_given_to_validate_is_named(repo: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    out = midtrain("validate", str(fifo), code=1)
    assert f"{fifo}: not a regular file" in out


@needs_symlink
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_symlink_to_dev_zero_is_refused_with_the_size_limit(repo: Path) -> None:
    link = root_of(repo) / "recipes" / "zero.yaml"
    link.symlink_to("/dev/zero")
    out = midtrain("validate", code=1)
    assert f"{link}: not a regular file" in out
    assert "character device" in out and f"size limit of {CAP}" in out


@needs_symlink
def test_symlink_loop_is_a_clear_error(repo: Path) -> None:
    recipes = root_of(repo) / "recipes"
    (recipes / "loop-a.yaml").symlink_to(recipes / "loop-b.yaml")
    (recipes / "loop-b.yaml").symlink_to(recipes / "loop-a.yaml")
    out = midtrain("validate", code=1)
    assert f"{recipes / 'loop-a.yaml'}: symlink loop" in out and f"{recipes / 'loop-b.yaml'}: symlink loop" in out
    out = midtrain("list", code=2)
    assert f"{recipes / 'loop-a.yaml'}: symlink loop" in out


@needs_symlink
def test_dangling_symlink_is_a_clear_error(repo: Path) -> None:
    link = root_of(repo) / "registry" / "models" / "gone.yaml"
    link.symlink_to(root_of(repo) / "registry" / "models" / "nowhere.yaml")
    out = midtrain("validate", code=1)
    assert f"{link}: dangling symlink" in out and "nowhere.yaml" in out


# ---------------------------------------------------------------- size and nesting


def test_deeply_nested_flow_lists_are_refused_before_parsing(repo: Path, tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("id: deep\nnotes: " + "[" * 10_000 + "]" * 10_000 + "\n")
    out = midtrain("validate", str(deep), code=1)
    assert f"{deep}:2: YAML nesting depth exceeds {MAX_DEPTH} levels" in out


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n")
    with pytest.raises(MidtrainError) as info:
        load_yaml(deep)
    problem = info.value.problems[0]
    assert "nesting depth" in problem.message and problem.file == deep and problem.line == MAX_DEPTH + 1


def test_brackets_in_text_do_not_count_as_nesting(tmp_path: Path) -> None:
    """Quoted scalars, block scalars, comments and plain text may hold any number of brackets."""
    many = "[" * (3 * MAX_DEPTH)
    text = f"a: \"{many}\"\nb: 'it''s {many}'\nc: see {many}\n# {many}\nd: |\n  {many}\n  more text\ne: [1, [2, [3]]]\n"
    check_nesting(tmp_path / "x.yaml", text)
    data, _ = load_yaml((tmp_path / "x.yaml"), text)
    assert data["e"] == [1, [2, [3]]] and data["d"].startswith("[[[")


def test_too_many_values_are_refused_before_parsing(tmp_path: Path) -> None:
    """A small file can still hold thousands of values (`[1,1,1,...]`); parsing each one costs time."""
    dense = tmp_path / "dense.yaml"
    dense.write_text("id: dense\nnotes: [" + "1," * (2 * MAX_VALUES) + "1]\n")
    assert dense.stat().st_size < MAX_FILE_BYTES
    with pytest.raises(MidtrainError) as info:
        load_yaml(dense)
    problem = info.value.problems[0]
    assert "too many values" in problem.message and problem.file == dense and problem.line == 2


def test_file_over_the_size_cap_is_refused(repo: Path, tmp_path: Path) -> None:
    text = (root_of(repo) / "recipes" / OLMO).read_text()
    big = tmp_path / "olmo-2-1124-7b.yaml"
    big.write_text(text + "# padding\n" * ((MAX_FILE_BYTES - len(text)) // 10 + 10))
    assert big.stat().st_size > MAX_FILE_BYTES
    out = midtrain("validate", str(big), code=1)
    assert f"{big}: file is too large" in out and f"size limit of {CAP}" in out


def test_file_at_the_size_cap_is_accepted(repo: Path, tmp_path: Path) -> None:
    text = (root_of(repo) / "recipes" / OLMO).read_text()
    padded = tmp_path / "olmo-2-1124-7b.yaml"
    padded.write_text(text + "# padding\n" * ((MAX_FILE_BYTES - len(text.encode())) // 10))
    assert MAX_FILE_BYTES - 10 < padded.stat().st_size <= MAX_FILE_BYTES
    result = CliRunner().invoke(app, ["validate", str(padded)])
    assert result.exit_code == 0, result.output
    assert "1 recipe(s) valid" in result.output and "Traceback" not in result.output


def test_count_with_thousands_of_digits_is_refused(repo: Path, tmp_path: Path) -> None:
    """The token-count pattern once backtracked over every split of a run of digits (quadratic)."""
    text = (root_of(repo) / "recipes" / OLMO).read_text()
    assert "tokens: 50B" in text
    bad = tmp_path / "olmo-2-1124-7b.yaml"
    bad.write_text(text.replace("tokens: 50B", "tokens: " + "9" * 50_000 + "x", 1))
    out = midtrain("validate", str(bad), code=1)
    assert f"{bad}:" in out and "stages[anneal].tokens" in out and "expected a positive number such as 50e9" in out


# ---------------------------------------------------------------- duplicate ids


def _duplicate(repo: Path) -> tuple[Path, Path]:
    recipes = root_of(repo) / "recipes"
    original = recipes / OLMO
    copy = recipes / "copies" / original.name
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    return original, copy


def test_validate_reports_a_duplicate_id_with_both_paths(repo: Path) -> None:
    original, copy = _duplicate(repo)
    out = midtrain("validate", code=1)
    assert "recipe id 'olmo-2-1124-7b' is also used by" in out
    assert str(original) in out and str(copy) in out
    listed = midtrain("list", code=2)  # what validate reports is what list refuses
    assert "recipe id 'olmo-2-1124-7b' is also used by" in listed


def test_validating_one_file_reports_a_duplicate_elsewhere(repo: Path) -> None:
    original, copy = _duplicate(repo)
    for target, other in ((original, copy), (copy, original)):
        result = CliRunner().invoke(app, ["validate", str(target)])
        assert result.exit_code == 1, result.output
        assert f"{target}:" in result.output and f"is also used by {other}" in result.output
        assert "Traceback" not in result.output


def test_a_copy_outside_the_catalogue_may_keep_its_id(repo: Path, tmp_path: Path) -> None:
    """`midtrain cp ID my-recipes/` keeps the id; that copy is no duplicate of the catalogue."""
    copy = tmp_path / "my-recipes" / OLMO.name
    copy.parent.mkdir()
    shutil.copyfile(root_of(repo) / "recipes" / OLMO, copy)
    result = CliRunner().invoke(app, ["validate", str(copy)])
    assert result.exit_code == 0, result.output
    assert "1 recipe(s) valid" in result.output
