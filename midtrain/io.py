"""Atomic writes: a file (or directory) is either complete at its final path or absent.

Everything midtrain produces goes through here: a temporary sibling is written, flushed and
fsynced, then renamed over the target, so a killed process or a full disk never leaves a partial
file that looks finished. Temporaries are named `.<target>.<pid>.<random>.tmp`: a writer killed
with SIGKILL cannot clean up after itself, so `remove_stale_temporaries` (called when a long writer
starts) removes those whose process is gone. What is written gets the user's umask, like any file
they create (tempfile's own 0600/0700 would hide data and checkpoints from their group).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from midtrain.errors import MidtrainError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


OS_REASONS = {
    errno.ENOSPC: "no space left on the device; nothing partial was kept",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.EEXIST: "a file already exists where a directory should go",
    errno.EISDIR: "a directory is where a file should be",
    errno.ENOTDIR: "a file is where a directory should be (a parent of this path is not a directory)",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ENOENT: "no such file or directory",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
    errno.EDQUOT: "disk quota exceeded; nothing partial was kept",
}


def os_error(exc: OSError, path: Path | str | None = None) -> MidtrainError:
    """An OSError as a message that names the path and says what is wrong, for the CLI's exit 2."""
    where = path if path is not None else (exc.filename or None)
    reason = OS_REASONS.get(exc.errno or -1, exc.strerror or str(exc))
    name = errno.errorcode.get(exc.errno or -1, "")
    if exc.filename2 and str(exc.filename2) != str(where):
        reason += f" (and {exc.filename2})"
    return MidtrainError.single(f"{reason}" + (f" [{name}]" if name else ""), file=Path(where) if where else None)


def disk_error(exc: OSError, path: Path) -> MidtrainError:
    return os_error(exc, path)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove `.<name>.<pid>.<random>.tmp` files and directories of writers that no longer run (a
    SIGKILL leaves them behind; at full scale they can be gigabytes). Returns what was removed."""
    import re

    pattern = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".old") and entry.is_dir():
            target = entry.with_name(entry.name[1:-4])
            try:  # killed between moving the old directory aside and moving the new one in: put it back
                os.replace(entry, target) if not target.exists() else shutil.rmtree(entry)
                removed.append(entry)
            except OSError:
                pass
            continue
        match = pattern.match(entry.name)
        if not match or _pid_alive(int(match.group(1))):
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """`with atomic_writer(p, "wb") as f: ...` — the file appears at `p` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError as exc:
        raise disk_error(exc, path) from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise disk_error(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_writer(path, "w") as handle:
        handle.write(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Build a directory under a temporary name; it replaces `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as exc:
        raise disk_error(exc, path) from None
    try:
        yield tmp
        publish_dir(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_error(exc, path) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: Path, path: Path, sync_files: bool = True) -> None:
    """Move a finished directory `tmp` (a sibling of `path`) to `path`: its files fsynced (unless the
    writer synced them already, as DCP's writers do), an existing `path` moved aside and removed
    only once the new one is in place (a kill in between leaves `.<name>.old`, which
    `remove_stale_temporaries` puts back). atomic_dir's last step; also how a directory that
    several processes wrote together (a distributed checkpoint) is published."""
    if sync_files:
        for child in tmp.rglob("*"):
            if child.is_file():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 of a file's bytes (hex), read in 4 MiB blocks: the one file hash midtrain uses."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(model_dir: Path) -> str | None:
    """Identity of a model directory's weights: the sha256 of its weight files' hashes (safetensors,
    and .bin where a base has them), in name order; None when it has none."""
    import hashlib

    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        return None
    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()
