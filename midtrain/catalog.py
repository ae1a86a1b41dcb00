"""Load and query `recipes/` and `registry/`. Fast (parsed YAML is cached) and torch-free.

Every problem found while loading is reported with file, line and field path; `validate_paths`
collects all of them instead of stopping at the first.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain import __version__
from midtrain.errors import MidtrainError, Problem, short
from midtrain.yamlio import LineMap, format_path, load_yaml, located_problem, problems_from_validation

if TYPE_CHECKING:  # the schema (pydantic models) is imported when a catalogue is loaded, not before
    from collections.abc import Callable, Mapping

    from midtrain.schema.recipe import Recipe
    from midtrain.schema.registry import Registry

REGISTRY_FILES = {"sources": "sources.yaml", "models": "models.yaml", "scales": "scales.yaml"}


def find_root(start: Path | None = None) -> Path:
    """The directory holding `recipes/` and `registry/`.

    Order: $MIDTRAIN_HOME, the nearest parent of the working directory that has both, then the
    checkout this package was installed from.
    """
    env = os.environ.get("MIDTRAIN_HOME")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "registry").is_dir() and (candidate / "recipes").is_dir():
            return candidate
    return Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- parse cache


def _file_key(path: Path) -> str:
    """An absolute name for `path` that never follows its last component.

    Path.resolve() raises on a symlink loop (RuntimeError) and would merge a symlink with its
    target; the directory part is resolved, the file name is kept as it is.
    """
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.parent.resolve() / absolute.name)
    except (OSError, RuntimeError):
        return str(absolute)


def _cache_file(root: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "midtrain"
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return base / f"parsed-{digest}.json"


def _code_stamp() -> str:
    """Cached results are only valid for the code that made them: version plus schema file stamps."""
    here = Path(__file__).resolve().parent
    parts = [__version__]
    for path in [*sorted((here / "schema").glob("*.py")), here / "summary.py", here / "catalog.py", here / "yamlio.py"]:
        with contextlib.suppress(OSError):
            parts.append(f"{path.name}:{path.stat().st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


class _ParseCache:
    """YAML parsing is the slow part of loading; its result is cached per file (mtime, size)."""

    def __init__(self, root: Path):
        self.path = _cache_file(root)
        self.entries: dict[str, Any] = {}
        self.dirty = False
        try:
            stored = json.loads(self.path.read_text())
            if stored.get("version") == _code_stamp():
                self.entries = stored.get("files", {})
        except (OSError, ValueError):
            pass

    @staticmethod
    def stamp(path: Path) -> list[int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return [stat.st_mtime_ns, stat.st_size]

    def load(self, path: Path) -> tuple[Any, LineMap]:
        key = _file_key(path)
        stamp = self.stamp(path) if path.is_file() else None  # stat only: never opens a FIFO
        hit = self.entries.get(key)
        if stamp and hit and hit["stamp"] == stamp:
            return hit["data"], LineMap.from_json(hit["lines"])
        data, lines = load_yaml(path)
        if stamp:
            self.entries[key] = {"stamp": stamp, "data": data, "lines": lines.to_json()}
            self.dirty = True
        return data, lines

    def save(self) -> None:
        if not self.dirty:
            return
        from midtrain.io import atomic_writer

        try:
            payload = json.dumps({"version": _code_stamp(), "files": self.entries})
            with atomic_writer(self.path) as handle:
                handle.write(payload)
        except (OSError, MidtrainError):  # atomic_writer reports a disk error as a MidtrainError
            pass  # a cache we cannot write only costs speed
        self.dirty = False


# ---------------------------------------------------------------- registry


def registry_files(root: Path) -> dict[str, list[Path]]:
    """Per kind: `registry/<kind>.yaml` and/or every `registry/<kind>/*.yaml` (one file per family)."""
    out: dict[str, list[Path]] = {}
    for kind, filename in REGISTRY_FILES.items():
        single = root / "registry" / filename
        folder = root / "registry" / kind
        # lexists: a dangling or looping symlink is listed (and then reported), not silently skipped.
        files = ([single] if os.path.lexists(single) else []) + (
            sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        )
        out[kind] = files or [single]  # a missing file is then reported by name
    return out


@dataclass
class LoadedRegistry:
    registry: Registry
    locations: dict[str, dict[str, tuple[Path, int | None]]]  # kind -> name -> (file, line)

    def where(self, kind: str, name: str) -> tuple[Path, int | None]:
        return self.locations[kind][name]

    def files(self, kind: str) -> list[Path]:
        return sorted({path for path, _ in self.locations[kind].values()})


def _load_registry(root: Path, cache: _ParseCache) -> LoadedRegistry:
    from pydantic import TypeAdapter, ValidationError

    from midtrain.schema.registry import BaseModelEntry, DataSource, Registry, ScaleProfile

    kinds: dict[str, Any] = {
        "sources": dict[str, DataSource],
        "models": dict[str, BaseModelEntry],
        "scales": dict[str, ScaleProfile],
    }
    adapters: dict[str, TypeAdapter[dict[str, Any]]] = {kind: TypeAdapter(tp) for kind, tp in kinds.items()}
    problems: list[Problem] = []
    merged: dict[str, dict[str, Any]] = {kind: {} for kind in REGISTRY_FILES}
    locations: dict[str, dict[str, tuple[Path, int | None]]] = {kind: {} for kind in REGISTRY_FILES}
    for kind, paths in registry_files(root).items():
        adapter = adapters[kind]
        for path in paths:
            try:
                raw, line_map = cache.load(path)
            except MidtrainError as exc:
                problems.extend(exc.problems)
                continue
            if not isinstance(raw, dict):
                problems.append(
                    Problem("expected a mapping of names to entries", file=path, line=1, found=type(raw).__name__)
                )
                continue
            try:
                entries = adapter.validate_python(raw)
            except ValidationError as exc:
                problems.extend(problems_from_validation(exc, path, line_map, data=raw, model=kinds[kind]))
                continue
            for name, entry in entries.items():
                if name in merged[kind]:
                    first, first_line = locations[kind][name]
                    problems.append(
                        Problem(
                            f"{kind[:-1]} {name!r} is already defined in {first}:{first_line}",
                            file=path,
                            line=line_map.line_for((name,)),
                            path=name,
                        )
                    )
                    continue
                merged[kind][name] = entry
                locations[kind][name] = (path, line_map.line_for((name,)))
    if problems:
        raise MidtrainError(problems)
    try:
        registry = Registry.model_validate(merged)
    except ValidationError as exc:  # names that are not slugs
        raise MidtrainError(
            problems_from_validation(exc, root / "registry", LineMap(), data=merged, model=Registry)
        ) from None
    return LoadedRegistry(registry, locations)


# ---------------------------------------------------------------- recipes


def _recipe_problems(
    path: Path, raw: Any, lines: LineMap, loaded: LoadedRegistry
) -> tuple[Recipe | None, list[Problem]]:
    """Validate one parsed recipe against the schema and the registry. Returns (recipe or None, problems)."""
    from pydantic import ValidationError

    from midtrain.schema.migrate import MigrationError, migrate
    from midtrain.schema.recipe import Recipe

    if not isinstance(raw, dict):
        return None, [
            Problem(
                "a recipe must be a YAML mapping", file=path, line=1, expected="a mapping", found=type(raw).__name__
            )
        ]
    try:
        raw, _ = migrate(raw)
    except MigrationError as exc:
        return None, [Problem(str(exc), file=path, line=lines.line_for(("schema_version",)), path="schema_version")]
    problems = _reference_problems(path, raw, lines, loaded)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        from midtrain.schema.checks import recipe_problems

        problems += [
            located_problem(item.path, item.message, path, lines, raw, item.expected, item.found)
            for item in recipe_problems(raw, exc)
        ]
        return None, sorted(problems, key=lambda problem: problem.line or 0)
    if recipe.id != path.stem:
        problems.append(
            Problem(
                "recipe id must match its file name",
                file=path,
                line=lines.line_for(("id",)),
                path="id",
                expected=path.stem,
                found=recipe.id,
            )
        )
    return (None if problems else recipe), problems


MAX_HINTS = 20  # "did you mean" suggestions per file; each costs a fuzzy match against the registry


def _reference_problems(path: Path, raw: dict[str, Any], lines: LineMap, loaded: LoadedRegistry) -> list[Problem]:
    """Dangling names: data sources and base models that the registry does not define."""
    registry = loaded.registry
    problems: list[Problem] = []
    base = raw.get("base")
    if isinstance(base, dict) and isinstance(base.get("model"), str) and base["model"] not in registry.models:
        problems.append(
            _dangling(path, lines, ("base", "model"), base["model"], "base model", registry.models, "registry/models")
        )
    for s_index, stage in enumerate(raw.get("stages") or []):
        if not isinstance(stage, dict):
            continue
        mixture = stage.get("mixture")
        components = mixture.get("components") if isinstance(mixture, dict) else None
        for c_index, component in enumerate(components or []):
            if isinstance(component, dict) and isinstance(component.get("source"), str):
                name = component["source"]
                if name not in registry.sources:
                    where = ("stages", s_index, "mixture", "components", c_index, "source")
                    suggest = len(problems) < MAX_HINTS
                    problems.append(
                        _dangling(
                            path, lines, where, name, "data source", registry.sources, "registry/sources", suggest, raw
                        )
                    )
    return problems


def _dangling(
    path: Path,
    lines: LineMap,
    where: tuple[str | int, ...],
    name: str,
    what: str,
    known: Mapping[str, object],
    registry_file: str,
    suggest: bool = True,
    data: Any = None,
) -> Problem:
    close = difflib.get_close_matches(name, list(known), n=3) if suggest else []
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return Problem(
        f"unknown {what} {name!r}{hint}",
        file=path,
        line=lines.line_for(where),
        path=format_path(where, data),
        expected=f"a name defined in {registry_file}.yaml or {registry_file}/*.yaml",
        found=short(name),
    )


def _read_recipe(
    path: Path, load: Callable[[Path], tuple[Any, LineMap]], loaded: LoadedRegistry
) -> tuple[Recipe | None, Any, LineMap, list[Problem]]:
    """Parse and validate one recipe file: (recipe or None, plain data, line map, problems).

    A file that cannot be read has no data and an empty line map.
    """
    try:
        raw, lines = load(path)
    except MidtrainError as exc:
        return None, None, LineMap(), exc.problems
    recipe, problems = _recipe_problems(path, raw, lines, loaded)
    return recipe, raw, lines, problems


@dataclass
class Catalog:
    root: Path
    loaded: LoadedRegistry
    recipes: dict[str, Recipe] = field(default_factory=dict)  # id -> recipe
    paths: dict[str, Path] = field(default_factory=dict)  # id -> file
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> plain data as written

    @property
    def registry(self) -> Registry:
        return self.loaded.registry

    def get(self, recipe_id: str) -> Recipe:
        key = recipe_id.removesuffix(".yaml").split("/")[-1]
        if key in self.recipes:
            return self.recipes[key]
        close = difflib.get_close_matches(key, list(self.recipes), n=3, cutoff=0.5)
        close += [r for r in self.recipes if key and key in r and r not in close]
        hint = f"; did you mean {', '.join(close[:3])}?" if close else "; `midtrain list` shows them all"
        raise MidtrainError.single(f"no recipe with id {recipe_id!r}{hint}")

    def all(self) -> list[Recipe]:
        return [self.recipes[k] for k in sorted(self.recipes)]


def recipe_files(root: Path) -> list[Path]:
    return sorted((root / "recipes").rglob("*.yaml"))


def load_catalog(root: Path | None = None) -> Catalog:
    """Registry plus every recipe under `recipes/`; raises MidtrainError listing all problems."""
    root = (root or find_root()).resolve()
    return _load_catalog_cached(str(root))


@lru_cache(maxsize=4)
def _load_catalog_cached(root_text: str) -> Catalog:
    root = Path(root_text)
    cache = _ParseCache(root)
    loaded = _load_registry(root, cache)
    catalog = Catalog(root, loaded)
    problems: list[Problem] = []
    for path in recipe_files(root):
        recipe, raw, lines, found = _read_recipe(path, cache.load, loaded)
        problems.extend(found)
        if recipe is not None:
            if recipe.id in catalog.recipes:
                problems.append(
                    Problem(
                        f"recipe id {recipe.id!r} is also used by {catalog.paths[recipe.id]}",
                        file=path,
                        line=lines.line_for(("id",)),
                        path="id",
                    )
                )
                continue
            catalog.recipes[recipe.id] = recipe
            catalog.paths[recipe.id] = path
            catalog.raw[recipe.id] = raw
            entry = cache.entries.get(_file_key(path))
            if entry is not None:
                from midtrain.summary import list_row

                row = list_row(recipe)
                if entry.get("row") != row:
                    entry["row"] = row
                    cache.dirty = True
    names = sorted(str(p) for paths in registry_files(root).values() for p in paths)
    if cache.entries.get("registry-files") != names:
        cache.entries["registry-files"] = names
        cache.dirty = True
    cache.save()  # only when something changed: an unchanged catalogue is not rewritten on every command
    if problems:
        raise MidtrainError(problems)
    return catalog


def cached_list_rows(root: Path | None = None) -> list[dict[str, Any]] | None:
    """`midtrain list` rows straight from the cache when no recipe, registry or schema file changed.

    This keeps the schema (and pydantic model building) off the path of the most common command.
    Returns None when anything is stale; the caller then loads and validates the catalogue.
    """
    root = (root or find_root()).resolve()
    cache = _ParseCache(root)
    if not cache.entries:
        return None
    current = registry_files(root)
    if cache.entries.get("registry-files") != sorted(str(p) for paths in current.values() for p in paths):
        return None  # a registry file was added or removed
    for paths in current.values():
        for path in paths:
            hit = cache.entries.get(_file_key(path))
            if not hit or hit["stamp"] != cache.stamp(path):
                return None
    rows = []
    files = recipe_files(root)
    for path in files:
        hit = cache.entries.get(_file_key(path))
        if not hit or hit["stamp"] != cache.stamp(path) or "row" not in hit:
            return None
        rows.append(hit["row"])
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        return None
    return rows


def split_registry_files(files: list[Path], root: Path) -> tuple[list[Path], list[Path]]:
    """Recipe files, and the project roots of the registry files among `files` (registry/*.yaml or
    registry/<kind>/*.yaml): those are validated as registry entries, never as recipes."""
    recipes: list[Path] = []
    roots: list[Path] = []
    for path in files:
        absolute = path.absolute()
        registry = next(
            (parent for parent in (absolute.parent, absolute.parent.parent) if parent.name == "registry"), None
        )
        if registry is None:
            recipes.append(path)
        elif registry.parent not in roots:
            roots.append(registry.parent)
    return recipes, roots


def validate_paths(paths: list[Path], root: Path | None = None) -> tuple[list[Recipe], list[Problem]]:
    """Validate recipe files (or directories of them); returns the good recipes and every problem.

    Finds everything `load_catalog` (and so `list` and `show`) would refuse: registry problems,
    recipe problems, and a file under `recipes/` whose id another file under `recipes/` also uses
    (whether or not that other file is among `paths`). Files outside `recipes/`, such as a copy made
    with `midtrain cp`, may reuse a catalogued id.
    """
    root = (root or find_root()).resolve()
    cache = _ParseCache(root)
    try:
        loaded = _load_registry(root, cache)
    except MidtrainError as exc:
        return [], exc.problems
    files, problems = _expand_paths(paths)
    files, registry_roots = split_registry_files(files, root)
    for other_root in registry_roots:  # registry files are recognised by where they live and checked as registry files
        if other_root != root:
            try:
                _load_registry(other_root, _ParseCache(other_root))
            except MidtrainError as exc:
                problems.extend(exc.problems)
    catalogue: dict[str, list[Path]] = {}  # file stem (= recipe id of a valid recipe) -> catalogue files
    for path in recipe_files(root):
        catalogue.setdefault(path.stem, []).append(path)
    in_catalogue = {_file_key(p) for group in catalogue.values() for p in group}
    checked = {_file_key(path) for path in files}
    owners: dict[str, Path] = {}  # recipe id -> the catalogue file validated here that holds it
    recipes: list[Recipe] = []
    for path in files:
        recipe, _, lines, found = _read_recipe(path, load_yaml, loaded)  # user files: read fresh, not cached
        problems.extend(found)
        if recipe is None:
            continue
        key = _file_key(path)
        if key in in_catalogue:
            other = owners.get(recipe.id) or _other_file_with_id(
                recipe.id, key, catalogue.get(recipe.id, []), checked, cache
            )
            if other is not None:
                problems.append(
                    Problem(
                        f"recipe id {recipe.id!r} is also used by {other}",
                        file=path,
                        line=lines.line_for(("id",)),
                        path="id",
                    )
                )
                continue
            owners[recipe.id] = path
        recipes.append(recipe)
    cache.save()
    return recipes, problems


def _expand_paths(paths: list[Path]) -> tuple[list[Path], list[Problem]]:
    """The files named, and the .yaml/.yml files under the directories named; each file once."""
    problems: list[Problem] = []
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("*.yaml")) + sorted(path.rglob("*.yml"))
            if not found:
                problems.append(Problem("no .yaml files in this directory", file=path))
            files.extend(found)
        else:
            files.append(path)
    once = list({_file_key(path): path for path in reversed(files)}.values())[::-1]  # first mention kept
    return once, problems


def _other_file_with_id(
    recipe_id: str, key: str, candidates: list[Path], checked: set[str], cache: _ParseCache
) -> Path | None:
    """Another catalogue file, not validated in this run, whose `id` is `recipe_id`.

    A valid recipe's id is its file name, so only files with that name (in other folders) can clash.
    """
    for other in candidates:
        other_key = _file_key(other)
        if other_key == key or other_key in checked:
            continue
        try:
            raw, _ = cache.load(other)
        except MidtrainError:
            continue  # unreadable: reported when that file is validated
        if isinstance(raw, dict) and raw.get("id") == recipe_id:
            return other
    return None
