"""Upgrading recipe files written for an older `schema_version`.

Each entry of `MIGRATIONS` turns version N into N+1 on plain data (before validation). A file
newer than this midtrain is refused with a message that says to upgrade midtrain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from midtrain.schema.base import SCHEMA_VERSION

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v0_to_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (the pre-release draft format) called stages' schedules `lr_schedule` and wrote
    mixtures as a bare list of components; version 1 names it `schedule` and nests `components`."""
    out = dict(data)
    stages = []
    for stage in out.get("stages", []) or []:
        if isinstance(stage, dict):
            stage = dict(stage)
            if "lr_schedule" in stage and "schedule" not in stage:
                stage["schedule"] = stage.pop("lr_schedule")
            if isinstance(stage.get("mixture"), list):
                stage["mixture"] = {"components": stage["mixture"]}
        stages.append(stage)
    if "stages" in out:
        out["stages"] = stages
    out["schema_version"] = 1
    return out


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 gave fill-in-the-middle as one number, a stage's `fim_rate`; version 2 has a `fim`
    block (rate, PSM/SPM split, level, sentinel tokens) that the data path applies. A provenance entry
    on `stages[x].fim_rate` moves to `stages[x].fim.rate`."""
    out = dict(data)
    stages = []
    for stage in out.get("stages", []) or []:
        if isinstance(stage, dict) and "fim_rate" in stage:
            stage = dict(stage)
            rate = stage.pop("fim_rate")
            if rate is not None and "fim" not in stage:
                stage["fim"] = {"rate": rate}
        stages.append(stage)
    if "stages" in out:
        out["stages"] = stages
    provenance = out.get("provenance")
    if isinstance(provenance, dict):
        out["provenance"] = {
            (
                f"{key[: -len('.fim_rate')]}.fim.rate" if isinstance(key, str) and key.endswith(".fim_rate") else key
            ): value
            for key, value in provenance.items()
        }
    out["schema_version"] = 2
    return out


MIGRATIONS: dict[int, Migration] = {0: _v0_to_v1, 1: _v1_to_v2}


class MigrationError(ValueError):
    pass


def migrate(data: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Bring `data` to SCHEMA_VERSION. Returns the new data and the versions it passed through."""
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise MigrationError(f"schema_version must be an integer, found {version!r}")
    if version > SCHEMA_VERSION:
        raise MigrationError(
            f"schema_version {version} is newer than this midtrain understands ({SCHEMA_VERSION}); upgrade midtrain"
        )
    steps = []
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise MigrationError(f"no migration from schema_version {version}")
        data = MIGRATIONS[version](data)
        steps.append(version)
        version += 1
    return data, steps
