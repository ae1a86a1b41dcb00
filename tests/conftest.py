"""Shared fixtures. Tests never reach a model or dataset hub."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two test workers share two cores: one thread per process (and per torchrun rank) avoids the
# oversubscription that makes a step 25x slower, and keeps CPU results deterministic.
os.environ.setdefault("MIDTRAIN_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# dvclive signals finished steps (for VS Code) in the DVC project it finds above the working
# directory; two test workers training at once in this repository raced on that one file. Each
# worker gets its own.
import tempfile

os.environ.setdefault("DVC_ROOT", tempfile.mkdtemp(prefix="midtrain-test-dvcroot-"))

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


from midtrain.data.builtin import CorpusSizes  # noqa: E402

SMALL = CorpusSizes(
    math_train=3000, math_eval=200, qa_math=2000, longdoc_train=100, longdoc_eval=40, prose_docs=400, code_docs=150
)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small tiny-scale data directory (vocabulary 512), built once per test process."""
    from midtrain.data.prepare import PrepareOptions, prepare_tiny

    out = tmp_path_factory.mktemp("prepared")
    prepare_tiny(PrepareOptions(out=out, vocab_size=512, sizes=SMALL, progress=False))
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow (end-to-end pipelines, minutes each) run first: the two workers of `make test`
    share them from the start instead of one worker finishing a long one while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
