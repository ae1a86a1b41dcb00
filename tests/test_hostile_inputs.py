"""Hostile input the data, planning and output paths must survive: escapes out of the project or
the shard folder, ids that are paths, OS errors at the output. Each case: exit code 2, a message
that names the file, option or field, and no traceback. (Recipe and registry special files:
tests/test_hostile_files.py; checkpoints: tests/train/test_hardening.py; model folders that ask
to run code: tests/test_own_base.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from midtrain.errors import MidtrainError

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def midtrain(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    return subprocess.run([str(BIN / "midtrain"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


def test_recipe_ids_that_are_paths_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for command in ("plan", "reproduce"):
        proc = midtrain(command, "../../x/olmo-2-1124-7b", cwd=tmp_path)
        refused(proc, "RECIPE_ID", "../../x/olmo-2-1124-7b")
    assert not any(tmp_path.iterdir())


def test_relative_registry_files_may_not_leave_the_project(tmp_path: Path) -> None:
    from midtrain.data.sources import expand_files

    project = tmp_path / "project"
    (project / "corpora").mkdir(parents=True)
    (project / "corpora" / "ok.jsonl").write_text('{"text": "fine"}\n')
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"text": "not yours"}\n')
    assert expand_files(["corpora/*.jsonl"], project) == [project / "corpora" / "ok.jsonl"]
    with pytest.raises(MidtrainError, match="climb out of the project"):
        expand_files(["../secret.jsonl"], project)
    with pytest.raises(MidtrainError, match="climb out of the project"):
        expand_files(["corpora/../../*.jsonl"], project)
    (project / "corpora" / "link.jsonl").symlink_to(secret)
    with pytest.raises(MidtrainError, match="outside the project"):
        expand_files(["corpora/link.jsonl"], project)
    assert expand_files([str(secret)], project) == [secret]  # an absolute path is the user's explicit choice


def test_a_lying_shard_manifest_cannot_point_outside_its_folder(prepared: Path, tmp_path: Path) -> None:
    from midtrain.data.packing import open_shard, read_manifest

    shards = tmp_path / "shards"
    shutil.copytree(prepared / "shards", shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    for field, value in (
        ("bin", "../../../etc/passwd"),
        ("idx", "/etc/hostname"),
        ("bin", ".hidden"),
        ("dtype", "float64"),
        ("tokens", -5),
    ):
        broken = json.loads(json.dumps(manifest))
        broken["streams"]["math.train"][field] = value
        (shards / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(MidtrainError) as caught:
            read_manifest(shards)
        assert "manifest" in caught.value.render() and f"streams.math.train.{field}" in caught.value.render()
    entry = dict(manifest["streams"]["math.train"], bin="../x.bin")
    with pytest.raises(MidtrainError, match="plain file name"):
        open_shard(shards, entry)


def test_os_errors_at_the_output_are_messages_naming_the_path(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    refused(
        midtrain("catalog", "markdown", "--out", str(a_file / "catalog.md")),
        str(a_file / "catalog.md"),
        "where a directory should go",
    )
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    refused(midtrain("catalog", "markdown", "--out", str(a_dir)), str(a_dir), "directory is where a file should be")
    long_name = tmp_path / ("n" * 300 + ".md")
    refused(midtrain("catalog", "markdown", "--out", str(long_name)), "name is too long")
    refused(midtrain("catalog", "markdown", "--out", "/sys/catalog.md"), "/sys/catalog.md")
    refused(midtrain("data", "prepare", "--out", str(a_file / "data")), str(a_file))


def test_written_files_get_the_users_umask(tmp_path: Path) -> None:
    from midtrain.io import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "file.txt", "x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inside").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    from midtrain.io import remove_stale_temporaries

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / f".shard.bin.{dead}.abc123.tmp").write_bytes(b"partial")
    (tmp_path / f".model.{dead}.def456.tmp").mkdir()
    live = tmp_path / f".other.{os.getpid()}.xyz.tmp"
    live.write_bytes(b"in progress")
    (tmp_path / ".soup.old").mkdir()  # killed between moving the old directory aside and the new one in
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 3 and live.exists() and (tmp_path / "soup").is_dir()
