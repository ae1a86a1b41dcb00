from __future__ import annotations

import json
import random
import re
from pathlib import Path

from midtrain.data import builtin


def test_math_problems_are_correct_and_deterministic() -> None:
    first = builtin.math_problems(0, 300, "train")
    assert first == builtin.math_problems(0, 300, "train")
    assert first != builtin.math_problems(1, 300, "train")
    assert {p.difficulty for p in first} == {1, 2, 3}
    for problem in first:
        # Re-do the arithmetic of every worked step and check the final answer.
        value = None
        for step in problem.steps:
            match = re.search(r"(\d+) ([+\-×÷]) (\d+) = (\d+)", step)
            if match:
                a, op, b, result = int(match[1]), match[2], int(match[3]), int(match[4])
                assert {"+": a + b, "-": a - b, "×": a * b, "÷": a // b}[op] == result
                if op == "÷":
                    assert a % b == 0
                value = result
        assert value == problem.answer
        assert len(problem.steps) >= problem.difficulty


def test_long_document_plants_one_fact_at_depth() -> None:
    sentences = builtin.filler_sentences()
    assert sentences and not any(re.search(r"\d", s) for s in sentences)
    doc = builtin.long_document(random.Random(3), sentences, words=400, depth=0.5)
    assert doc.text.count(builtin.FACT_MARKER) == 1
    assert re.findall(r"\d+", doc.text) == [str(doc.value)]
    position = doc.text.index(builtin.FACT_MARKER) / len(doc.text)
    assert 0.35 < position < 0.65
    assert 10 <= doc.value <= 999 and doc.words >= 400


def test_corpora_are_byte_identical_for_a_seed(tmp_path: Path) -> None:
    sizes = builtin.CorpusSizes(math_train=200, math_eval=20, qa_math=100, longdoc_train=10, longdoc_eval=5)
    for name in ("math", "qa", "longdoc"):
        a = builtin.build_builtin(name, tmp_path / "a", seed=5, sizes=sizes)
        b = builtin.build_builtin(name, tmp_path / "b", seed=5, sizes=sizes)
        assert a["splits"] == b["splits"]
        assert a["splits"]["train"]["documents"] > 0 and a["splits"]["heldout"]["documents"] > 0


def test_split_is_by_document_and_stable(tmp_path: Path) -> None:
    manifest = builtin.build_builtin("prose", tmp_path)
    train = {json.loads(line)["id"] for line in (tmp_path / "prose.train.jsonl").open()}
    held = {json.loads(line)["id"] for line in (tmp_path / "prose.heldout.jsonl").open()}
    assert train and held and not train & held
    assert all(builtin._split_name(i) == "heldout" for i in held)
    assert manifest["splits"]["train"]["bytes"] > 500_000


def test_math_eval_has_no_exact_training_duplicates(tmp_path: Path) -> None:
    sizes = builtin.CorpusSizes(math_train=2000, math_eval=100)
    builtin.build_builtin("math", tmp_path, sizes=sizes)
    train = {json.loads(line)["text"].split("\n")[0] for line in (tmp_path / "math.train.jsonl").open()}
    rows = [json.loads(line) for line in (tmp_path / "math.heldout.jsonl").open()]
    assert len(rows) == 100 and all(r["prompt"].split("\n")[0] not in train for r in rows)
