"""Shared fixtures. Tests never reach a model or dataset hub."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own parse cache, and the catalogue's in-process cache is cleared."""
    from midtrain import catalog

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    catalog._load_catalog_cached.cache_clear()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of recipes/ and registry/ that a test may break; MIDTRAIN_HOME points at it."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copytree(REPO / "registry", root / "registry")
    monkeypatch.setenv("MIDTRAIN_HOME", str(root))
    return root


@pytest.fixture
def olmo_text() -> str:
    return (REPO / "recipes" / "olmo-2" / "olmo-2-1124-7b.yaml").read_text()
