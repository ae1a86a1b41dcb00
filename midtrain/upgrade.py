"""Rewriting recipe files with an older `schema_version` in the current format (`midtrain validate --migrate`).

The migrations themselves are in `midtrain.schema.migrate` and work on plain data (the schema layer
does no I/O); this module, beside `catalog` and `yamlio`, walks the files, skips what cannot be read or migrated (validation then reports it), and writes each upgraded
file atomically. Comments are not kept: the file is dumped again from the migrated data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from midtrain.errors import MidtrainError


@dataclass(frozen=True)
class Migrated:
    path: Path
    from_version: int
    to_version: int


def yaml_files(targets: Iterable[Path]) -> list[Path]:
    """The files themselves, and every `*.yaml` under a directory."""
    return [f for t in targets for f in (sorted(t.rglob("*.yaml")) if t.is_dir() else [t])]


def migrate_files(targets: Iterable[Path]) -> Iterator[Migrated]:
    """Upgrade every recipe file among `targets` written for an older schema version, in place.

    Yields each rewritten file once it is written. Unreadable files, files that are not mappings
    and files no migration applies to are left alone.
    """
    from midtrain.io import write_text
    from midtrain.schema.migrate import MigrationError, migrate
    from midtrain.yamlio import dump_yaml, load_yaml

    for path in yaml_files(targets):
        try:
            data, _ = load_yaml(path)
        except MidtrainError:
            continue  # validation reports it
        if not isinstance(data, dict):
            continue
        try:
            upgraded, steps = migrate(data)
        except MigrationError:
            continue
        if steps:
            write_text(path, dump_yaml(upgraded))
            yield Migrated(path, steps[0], steps[-1] + 1)
