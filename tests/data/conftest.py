from __future__ import annotations

from pathlib import Path

import pytest

from midtrain.data.builtin import CorpusSizes
from midtrain.data.prepare import PrepareOptions, prepare_tiny

SMALL = CorpusSizes(math_train=3000, math_eval=200, qa_math=2000, longdoc_train=100, longdoc_eval=40, prose_docs=400, code_docs=150)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small tiny-scale data directory, built once per test process."""
    out = tmp_path_factory.mktemp("prepared")
    prepare_tiny(PrepareOptions(out=out, vocab_size=512, sizes=SMALL, progress=False))
    return out
