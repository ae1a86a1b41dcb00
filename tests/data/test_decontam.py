from __future__ import annotations

import json
from pathlib import Path

from midtrain.data.decontam import EvalIndex, Report, filter_documents
from midtrain.data.prepare import PrepareOptions, prepare_tiny
from tests.conftest import SMALL

EVAL = [
    "Problem: Ada has 12 marbles. At the market, Ada buys 7 more. How many marbles does Ada have now?",
    "The mitochondria is the powerhouse of the cell and converts nutrients into adenosine triphosphate through respiration.",
]


def test_planted_overlaps_removed_clean_kept() -> None:
    index = EvalIndex(n=13)
    for i, text in enumerate(EVAL):
        index.add(f"eval{i}", text)
    docs = [
        ("clean1", "Python's with statement wraps a block in the methods defined by a context manager. " * 3),
        ("planted1", "Some preamble text here. " + EVAL[1] + " And some trailing discussion afterwards."),
        ("planted0", "Worked example follows. " + EVAL[0] + " Solution: 12 + 7 = 19."),
        ("clean2", "Problem: Ben has 30 cards. At the bakery, Ben buys 4 more. How many cards does Ben have now?"),
    ]
    report = Report(13, 0.5, "drop")
    kept = [doc_id for doc_id, _ in filter_documents(docs, index, report, "src")]
    assert kept == ["clean1", "clean2"]
    assert report.sources["src"] == {"documents": 4, "contaminated": 2}
    assert {e["eval_item"] for e in report.examples} == {"eval0", "eval1"}


def test_flag_only_keeps_documents() -> None:
    index = EvalIndex(n=13)
    index.add("e", EVAL[1])
    report = Report(13, 0.5, "flag")
    kept = list(filter_documents([("d", EVAL[1])], index, report, "src", action="flag"))
    assert kept == [("d", EVAL[1])] and report.sources["src"]["contaminated"] == 1


def test_user_eval_file_is_applied(tmp_path: Path) -> None:
    # Plant a piece of a built-in training document into a user evaluation set: it must be dropped.
    base = tmp_path / "base"
    prepare_tiny(PrepareOptions(out=base, vocab_size=512, sizes=SMALL, progress=False))
    first_code = json.loads((base / "corpora" / "code.train.jsonl").open().readline())["text"]
    eval_file = tmp_path / "my_eval.jsonl"
    eval_file.write_text(json.dumps({"text": first_code[:2000]}) + "\n")
    out = tmp_path / "with-eval"
    prepare_tiny(PrepareOptions(out=out, vocab_size=512, sizes=SMALL, progress=False, extra_eval=[eval_file]))
    report = json.loads((out / "decontam.json").read_text())
    assert report["sources"]["code.train"]["contaminated"] >= 1
    assert any(e["eval_item"] == "my_eval.jsonl:0" for e in report["examples"])


def test_batched_judging_matches_one_document_at_a_time() -> None:
    """worst_overlaps (what filter_documents uses) gives exactly worst_overlap's answer per text:
    long and short texts, texts that share n-grams with items across a chunk's text boundaries,
    empty texts."""
    import random

    from midtrain.data.decontam import EvalIndex

    rng = random.Random(7)
    vocabulary = [f"w{i}" for i in range(60)]
    texts = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 80))) for _ in range(300)]
    index = EvalIndex(n=5)
    for number, text in enumerate(texts[::9]):
        words = text.split()
        index.add(f"item{number}", " ".join(words[: rng.randint(1, max(len(words), 1))]))
    joined = texts[10].split()[-3:] + texts[11].split()[:3]  # an n-gram that only exists across a boundary
    index.add("straddle", " ".join(joined))
    singles = [index.worst_overlap(t) for t in texts]
    assert index.worst_overlaps(texts) == singles
    assert any(overlap > 0 for overlap, _ in singles)
