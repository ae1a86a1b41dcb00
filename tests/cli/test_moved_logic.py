"""The library logic that used to live in the CLI modules, tested without the CLI: search, JSON Schema
export, file migration (`validate --migrate`), and the parse cache writing through midtrain.io."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from midtrain.catalog import find_root, load_catalog
from midtrain.errors import MidtrainError

OLMO = "olmo-2-1124-7b"


# ---------------------------------------------------------------- midtrain.search


def test_haystack_names_the_fields_it_searches() -> None:
    from midtrain.search import haystack

    catalog = load_catalog()
    recipe = catalog.get(OLMO)
    fields = haystack(recipe, catalog.registry)
    assert fields["id"] == OLMO and recipe.source.title in fields["paper"]
    stage = recipe.stages[0]
    assert stage.name in fields[f"stage {stage.name}"]
    source = stage.mixture.components[0].source
    assert fields[f"source {source}"].startswith(source)


def test_search_needs_every_word_and_ranks_by_count() -> None:
    from midtrain.search import query_words, search

    catalog = load_catalog()
    words = query_words(["souping", "MATH"])
    assert words == ["souping", "math"]
    hits = search(catalog.all(), catalog.registry, words)
    assert hits and OLMO in [h["id"] for h in hits]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for hit in hits:
        assert set(hit) == {"id", "title", "score", "fields", "snippet"} and hit["fields"]
    assert search(catalog.all(), catalog.registry, ["souping", "zzzqqq-nowhere"]) == []


def test_snippet_cuts_around_the_first_match() -> None:
    from midtrain.search import snippet

    text = "a" * 200 + " needle " + "b" * 200
    cut = snippet(text, ["needle"], width=60)
    assert cut.startswith("…") and cut.endswith("…") and "needle" in cut and len(cut) == 62
    assert snippet("short needle", ["needle"]) == "short needle"
    assert snippet("no match here", ["zzz"]) == "no match here"


# ---------------------------------------------------------------- midtrain.schema.export


def test_schema_kinds_and_files() -> None:
    from midtrain.schema.export import SCHEMA_KINDS, check_kind, json_schema, schema_filename, schema_text

    assert [schema_filename(k) for k in SCHEMA_KINDS] == [
        "recipe.schema.json",
        "registry-sources.schema.json",
        "registry-models.schema.json",
        "registry-scales.schema.json",
    ]
    with pytest.raises(MidtrainError, match="unknown schema 'widgets'"):
        check_kind("widgets")
    with pytest.raises(MidtrainError):
        json_schema("widgets")
    sources = json.loads(schema_text("sources"))
    assert sources["$schema"].endswith("2020-12/schema") and sources["title"] == "midtrain registry: sources"
    stored = find_root() / "docs" / "schema"
    for kind in SCHEMA_KINDS:
        assert json.loads((stored / schema_filename(kind)).read_text()) == json.loads(schema_text(kind)), (
            "run `midtrain schema --out docs/schema`"
        )


def test_schema_help_lists_every_kind() -> None:
    """The CLI spells the kinds out (importing the schema would slow every command's start-up)."""
    from midtrain.cli.browse.schema import KIND_HELP
    from midtrain.schema.export import SCHEMA_KINDS

    assert f"Which schema: {', '.join(SCHEMA_KINDS)}." == KIND_HELP


# ---------------------------------------------------------------- midtrain.upgrade


def _old_recipe(directory: Path) -> Path:
    """The OLMo 2 recipe as schema_version 0 wrote it (`lr_schedule`)."""
    text = (find_root() / "recipes" / "olmo-2" / f"{OLMO}.yaml").read_text(encoding="utf-8")
    text, count = re.subn(r"(?m)^schema_version:.*$", "schema_version: 0", text)
    assert count == 1 and "    schedule:" in text
    path = directory / f"{OLMO}.yaml"
    path.write_text(text.replace("    schedule:", "    lr_schedule:"), encoding="utf-8")
    return path


def test_migrate_files_rewrites_old_files_only(tmp_path: Path) -> None:
    from midtrain.catalog import validate_paths
    from midtrain.upgrade import Migrated, migrate_files

    old = _old_recipe(tmp_path)
    os.chmod(old, 0o640)
    (tmp_path / "broken.yaml").write_text(": : :\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert list(migrate_files([tmp_path])) == [Migrated(old, 0, 2)]
    assert "lr_schedule" not in old.read_text() and re.search(r"(?m)^schema_version: 2$", old.read_text())
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(old.stat().st_mode) == 0o666 & ~mask  # a new file with the user's umask, not 0600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    recipes, problems = validate_paths([old])
    assert [r.id for r in recipes] == [OLMO] and not problems
    assert list(migrate_files([old])) == []  # current files are left alone


def test_validate_migrate_prints_each_file(tmp_path: Path) -> None:
    from midtrain.cli import app

    old = _old_recipe(tmp_path)
    result = CliRunner().invoke(app, ["validate", "--migrate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"migrated {old} from schema_version 0 to 2 (comments were not kept)" in result.stdout
    assert "✓ 1 recipe(s) valid" in result.stdout


# ---------------------------------------------------------------- the parse cache


def test_parse_cache_writes_through_the_atomic_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import midtrain.io
    from midtrain.catalog import _ParseCache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    written = []
    real = midtrain.io.atomic_writer

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        written.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(midtrain.io, "atomic_writer", spy)
    root = find_root()
    cache = _ParseCache(root)
    recipe = root / "recipes" / "olmo-2" / f"{OLMO}.yaml"
    data, _ = cache.load(recipe)
    cache.save()
    assert written == [cache.path] and cache.path.parent == tmp_path / "midtrain"
    assert not [p for p in cache.path.parent.iterdir() if p != cache.path], "no temporaries left"
    assert _ParseCache(root).load(recipe)[0] == data  # read back from the file


def test_parse_cache_that_cannot_be_written_only_costs_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from midtrain.catalog import _ParseCache

    (tmp_path / "midtrain").write_text("a file where the cache directory should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = find_root()
    cache = _ParseCache(root)
    cache.load(root / "recipes" / "olmo-2" / f"{OLMO}.yaml")
    cache.save()  # no exception
    assert not cache.dirty


def test_an_unchanged_catalogue_is_not_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `show`, `diff`, `search` loads the catalogue; the cache is written only when something changed."""
    import midtrain.io
    from midtrain.catalog import _load_catalog_cached, cached_list_rows

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    written = []
    real = midtrain.io.atomic_writer

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        written.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(midtrain.io, "atomic_writer", spy)
    _load_catalog_cached.cache_clear()
    try:
        load_catalog()
        assert len(written) == 1
        _load_catalog_cached.cache_clear()
        load_catalog()
        assert len(written) == 1, "rewritten though nothing changed"
        assert cached_list_rows() is not None  # what `midtrain list` reads was kept
    finally:
        _load_catalog_cached.cache_clear()
