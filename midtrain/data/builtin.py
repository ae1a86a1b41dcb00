"""Built-in corpora, made on the machine: the embedded default needs no hub and no network.

Five corpora, each deterministic for a given seed and Python version, each split by document into
`train` and `heldout`:

- prose:   documentation that ships inside CPython (pydoc topics, module/class/function docstrings)
- code:    the standard library's sources, cut at top-level definitions
- math:    seeded multi-step word problems with worked solutions and a final answer, 3 difficulties;
           the held-out split comes from a different seed stream and is decontaminated against train
- qa:      question → answer pairs built from the math generator and the documentation
- longdoc: long documents of digit-free filler with one planted fact (a distinctive marker and a
           2-3 digit value) at a controlled depth, closed by the question; for retrieval at lengths

Documents are written as JSON lines, `{"text": ...}` (plus metadata), with a manifest that records
documents, bytes and sha256 per file.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTINS = ("prose", "code", "math", "qa", "longdoc")
HELDOUT_EVERY = 20  # one document in 20 is held out (by document, never by token)
MAX_DOC_CHARS = 12_000


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files() -> list[Path]:
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo", "__pycache__"}
    root = _stdlib()
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))


def _split_name(key: str) -> str:
    """Stable train/held-out assignment from a document key (not from its position)."""
    digest = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    return "heldout" if digest % HELDOUT_EVERY == 0 else "train"


# ---------------------------------------------------------------- prose


def prose_documents() -> Iterator[tuple[str, str]]:
    """(key, text): pydoc topics, then docstrings (≥ 120 characters) of the standard library."""
    import pydoc_data.topics

    for name in sorted(pydoc_data.topics.topics):
        yield f"topic:{name}", pydoc_data.topics.topics[name].strip()
    for path in _stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = path.relative_to(_stdlib()).with_suffix("").as_posix().replace("/", ".")
        for node in _documented_nodes(tree):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 120:
                name = getattr(node, "name", "")
                yield f"doc:{module}:{name}:{getattr(node, 'lineno', 0)}", doc.strip()


def _documented_nodes(
    tree: ast.Module,
) -> Iterator[ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef]:
    """The module, then its classes and functions in `ast.walk`'s breadth-first order. Only
    statements (and except/match clauses) are descended into: no definition sits inside an
    expression, and skipping expressions halves the time of building the prose corpus."""
    from collections import deque

    yield tree
    queue: deque[ast.AST] = deque([tree])
    while queue:
        for child in ast.iter_child_nodes(queue.popleft()):
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield child
                queue.append(child)


# ---------------------------------------------------------------- code


def code_documents() -> Iterator[tuple[str, str]]:
    """(key, text): standard-library modules, cut at top-level statements into ≤ 12K-character pieces."""
    for path in _stdlib_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        module = path.relative_to(_stdlib()).as_posix()
        for index, piece in enumerate(_cut_code(text)):
            if len(piece.strip()) >= 200:
                yield f"code:{module}:{index}", piece


def _cut_code(text: str) -> Iterator[str]:
    lines = text.splitlines(keepends=True)
    piece: list[str] = []
    size = 0
    for line in lines:
        top_level = line[:1] not in (" ", "\t", "\n", "#", ")", "]", "}") and line.strip()
        if top_level and size >= MAX_DOC_CHARS // 2:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
        if size >= MAX_DOC_CHARS * 2:
            yield "".join(piece)
            piece, size = [], 0
    if piece:
        yield "".join(piece)


# ---------------------------------------------------------------- math

NAMES = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Ema",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jon",
    "Kira",
    "Liam",
    "Mina",
    "Noor",
    "Omar",
    "Pia",
]
ITEMS = [
    ("apple", "apples"),
    ("pencil", "pencils"),
    ("book", "books"),
    ("marble", "marbles"),
    ("stamp", "stamps"),
    ("card", "cards"),
    ("shell", "shells"),
    ("coin", "coins"),
]
PLACES = ["market", "library", "school fair", "bakery", "harbour", "museum shop"]


@dataclass(frozen=True)
class MathProblem:
    question: str
    steps: tuple[str, ...]
    answer: int
    difficulty: int

    def text(self) -> str:
        lines = [f"Problem: {self.question}", "Solution:"]
        lines += [f"Step {i + 1}: {step}" for i, step in enumerate(self.steps)]
        lines.append(f"Answer: {self.answer}")
        return "\n".join(lines)

    def prompt(self) -> str:
        """What the model sees at evaluation time; it must produce the rest."""
        return f"Problem: {self.question}\nSolution:\n"


def _counting(rng: random.Random, difficulty: int) -> MathProblem:
    name = rng.choice(NAMES)
    friend = rng.choice([n for n in NAMES if n != name])
    _item, items = rng.choice(ITEMS)  # (singular, plural): the question uses the plural
    place = rng.choice(PLACES)
    start = rng.randint(3, 90)
    bought = rng.randint(2, 60)
    steps = []
    total = start + bought
    question = f"{name} has {start} {items}. At the {place}, {name} buys {bought} more."
    steps.append(f"{name} starts with {start} and buys {bought}, so {start} + {bought} = {total}.")
    if difficulty >= 2:
        given = rng.randint(1, total - 1)
        question += f" Then {name} gives {given} to {friend}."
        steps.append(f"After giving {given} away, {total} - {given} = {total - given}.")
        total -= given
    if difficulty >= 3:
        factor = rng.randint(2, 9)
        question += f" Later the number of {items} is multiplied by {factor} in a game."
        steps.append(f"Multiplying by {factor} gives {total} × {factor} = {total * factor}.")
        total *= factor
    groups = rng.choice([g for g in (2, 3, 4, 5, 6) if total % g == 0] or [1])
    if groups > 1:
        question += f" Finally {name} shares them equally among {groups} boxes. How many {items} go in each box?"
        steps.append(f"Sharing {total} among {groups} boxes gives {total} ÷ {groups} = {total // groups}.")
        total //= groups
    else:
        question += f" How many {items} does {name} have now?"
        steps.append(f"So {name} has {total} {items}.")
    return MathProblem(question, tuple(steps), total, difficulty)


def _shopping(rng: random.Random, difficulty: int) -> MathProblem:
    name = rng.choice(NAMES)
    item, items = rng.choice(ITEMS)
    count = rng.randint(2, 12)
    price = rng.randint(2, 25)
    cost = count * price
    question = f"At the {rng.choice(PLACES)}, one {item} costs {price} dollars. {name} buys {count} {items}."
    steps = [f"The {items} cost {count} × {price} = {cost} dollars."]
    total = cost
    if difficulty >= 2:
        extra = rng.randint(3, 40)
        question += f" {name} also pays {extra} dollars for a bag."
        steps.append(f"With the bag, {cost} + {extra} = {cost + extra} dollars.")
        total = cost + extra
    if difficulty >= 3:
        paid = (total // 50 + 1 + rng.randint(0, 2)) * 50
        question += f" {name} pays with {paid} dollars. How much change does {name} get?"
        steps.append(f"The change is {paid} - {total} = {paid - total} dollars.")
        total = paid - total
    else:
        question += f" How many dollars does {name} spend?"
    return MathProblem(question, tuple(steps), total, difficulty)


def _travel(rng: random.Random, difficulty: int) -> MathProblem:
    name = rng.choice(NAMES)
    speed = rng.randint(3, 60)
    hours = rng.randint(2, 9)
    distance = speed * hours
    question = f"{name} travels at {speed} kilometres per hour for {hours} hours."
    steps = [f"The distance is {speed} × {hours} = {distance} kilometres."]
    total = distance
    if difficulty >= 2:
        more = rng.randint(5, 80)
        more += (distance + more) % 2  # an even total always splits over days
        question += f" Then {name} walks {more} more kilometres."
        steps.append(f"In all, {distance} + {more} = {distance + more} kilometres.")
        total = distance + more
    if difficulty >= 3:
        days = rng.choice([d for d in (2, 3, 4, 5) if total % d == 0] or [1])
        if days > 1:
            question += f" The same trip is split evenly over {days} days. How many kilometres per day?"
            steps.append(f"Per day, {total} ÷ {days} = {total // days} kilometres.")
            total //= days
        else:
            question += " How many kilometres in total?"
    else:
        question += " How many kilometres does " + name + " cover?"
    return MathProblem(question, tuple(steps), total, difficulty)


def _rectangle(rng: random.Random, difficulty: int) -> MathProblem:
    width, height = rng.randint(2, 30), rng.randint(2, 30)
    area = width * height
    question = f"A garden is {width} metres wide and {height} metres long."
    steps = [f"The area is {width} × {height} = {area} square metres."]
    total = area
    if difficulty >= 2:
        path = rng.randint(1, max(1, area // 3))
        path += (area - path) % 2 if path + 1 < area else 0  # an even remainder always splits into bags
        question += f" A path covers {path} square metres of it."
        steps.append(f"Without the path, {area} - {path} = {area - path} square metres.")
        total = area - path
    if difficulty >= 3:
        per = rng.choice([p for p in (2, 3, 4, 5) if total % p == 0] or [1])
        if per > 1:
            question += f" One bag of seed covers {per} square metres. How many bags are needed?"
            steps.append(f"Bags needed: {total} ÷ {per} = {total // per}.")
            total //= per
        else:
            question += " How many square metres are planted?"
    else:
        question += " How many square metres can be planted?"
    return MathProblem(question, tuple(steps), total, difficulty)


def _ages(rng: random.Random, difficulty: int) -> MathProblem:
    name, other = rng.sample(NAMES, 2)
    age = rng.randint(4, 40)
    gap = rng.randint(2, 30)
    question = f"{name} is {age} years old. {other} is {gap} years older than {name}."
    steps = [f"{other} is {age} + {gap} = {age + gap} years old."]
    total = age + gap
    if difficulty >= 2:
        years = rng.randint(2, 20)
        question += f" In {years} years,"
        steps.append(f"In {years} years {other} will be {total} + {years} = {total + years}.")
        total += years
        if difficulty >= 3:
            factor = rng.randint(2, 4)
            question += f" what will {factor} times {other}'s age be?"
            steps.append(f"{factor} times that is {total} × {factor} = {total * factor}.")
            total *= factor
        else:
            question += f" how old will {other} be?"
    else:
        question += f" How old is {other}?"
    return MathProblem(question, tuple(steps), total, difficulty)


KINDS = (_counting, _shopping, _travel, _rectangle, _ages)


def math_problem(rng: random.Random, difficulty: int) -> MathProblem:
    """A word problem of one of five kinds with `difficulty` (1-3) arithmetic steps or more."""
    return rng.choice(KINDS)(rng, difficulty)


def math_problems(seed: int, count: int, stream: str) -> list[MathProblem]:
    """`count` problems from a seeded stream; `stream` ('train' or 'eval') keeps the splits apart."""
    rng = random.Random(f"{seed}:{stream}")
    return [math_problem(rng, 1 + i % 3) for i in range(count)]


# ---------------------------------------------------------------- QA


def qa_documents(seed: int, math_count: int) -> Iterator[tuple[str, str]]:
    """Question → answer pairs from the math generator and from the documentation topics."""
    import pydoc_data.topics

    for index, problem in enumerate(math_problems(seed, math_count, "qa")):
        yield f"qa:math:{index}", f"Question: {problem.question}\nAnswer: {problem.answer}"
    for name in sorted(pydoc_data.topics.topics):
        text = pydoc_data.topics.topics[name].strip()
        first = re.split(r"(?<=[.!?])\s", text.split("\n\n")[-1 if len(text.split("\n\n")) < 2 else 1], maxsplit=1)[0]
        if 40 <= len(first) <= 400:
            yield (
                f"qa:topic:{name}",
                f"Question: In Python, what does the documentation say about {name.replace('-', ' ')}?\nAnswer: {first}",
            )


# ---------------------------------------------------------------- long documents with planted facts

FACT_MARKER = "VAULT"
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def filler_sentences(limit: int = 20000) -> list[str]:
    """Digit-free sentences from the documentation, used as haystack filler."""
    import pydoc_data.topics

    out = []
    for name in sorted(pydoc_data.topics.topics):
        for sentence in re.split(r"(?<=[.!?])\s+", pydoc_data.topics.topics[name]):
            sentence = " ".join(sentence.split())
            if 40 <= len(sentence) <= 240 and not re.search(r"[0-9]", sentence) and FACT_MARKER not in sentence.upper():
                out.append(sentence)
                if len(out) >= limit:
                    return out
    return out


@dataclass(frozen=True)
class LongDoc:
    text: str
    key: str
    value: int
    depth: float
    words: int

    def question(self) -> str:
        return f"\nQuestion: what is the code of the {self.key} {FACT_MARKER}? Answer:"


def long_document(rng: random.Random, sentences: list[str], words: int, depth: float) -> LongDoc:
    """About `words` words of filler with one fact planted at `depth` (0 = start, 1 = end)."""
    key = rng.choice(
        [
            "amber",
            "birch",
            "cobalt",
            "delta",
            "ember",
            "fjord",
            "garnet",
            "harbor",
            "indigo",
            "juniper",
            "kestrel",
            "lagoon",
            "maple",
            "nimbus",
            "onyx",
            "prairie",
            "quartz",
            "raven",
            "saffron",
            "tundra",
        ]
    )
    value = rng.randint(10, 999)
    fact = f"The code of the {key} {FACT_MARKER} is {value}."
    body: list[str] = []
    count = 0
    while count < words:
        sentence = rng.choice(sentences)
        body.append(sentence)
        count += len(sentence.split())
    position = min(len(body), max(0, round(depth * len(body))))
    body.insert(position, fact)
    return LongDoc(" ".join(body), key, value, depth, count)


def longdoc_documents(
    seed: int, count: int, stream: str, lengths: tuple[int, ...] = (150, 300, 600, 900)
) -> Iterator[tuple[str, LongDoc]]:
    rng = random.Random(f"{seed}:longdoc:{stream}")
    sentences = filler_sentences()
    for index in range(count):
        words = lengths[index % len(lengths)]
        depth = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9])
        yield f"longdoc:{stream}:{index}", long_document(rng, sentences, words, depth)


# ---------------------------------------------------------------- writing the corpora


@dataclass
class CorpusSizes:
    math_train: int = 20_000
    math_eval: int = 500
    qa_math: int = 20_000
    longdoc_train: int = 800
    longdoc_eval: int = 200
    prose_docs: int | None = None  # caps for quick tests; None keeps every document
    code_docs: int | None = 600


def _write_jsonl(path: Path, rows: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """Write rows atomically; returns the manifest entry (documents, bytes, sha256)."""
    from midtrain.io import atomic_writer

    digest = hashlib.sha256()
    documents = 0
    size = 0
    with atomic_writer(path, "wb") as handle:
        for row in rows:
            line = (json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
            handle.write(line)
            digest.update(line)
            documents += 1
            size += len(line)
    return {"file": path.name, "documents": documents, "bytes": size, "sha256": digest.hexdigest()}


def build_builtin(name: str, out_dir: Path, seed: int = 0, sizes: CorpusSizes | None = None) -> dict[str, Any]:
    """Write `<name>.train.jsonl` and `<name>.heldout.jsonl` into `out_dir`; return their manifest."""
    sizes = sizes or CorpusSizes()
    out_dir.mkdir(parents=True, exist_ok=True)
    train: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    if name in ("prose", "code"):
        import itertools

        docs = prose_documents() if name == "prose" else code_documents()
        cap = sizes.prose_docs if name == "prose" else sizes.code_docs
        for key, text in itertools.islice(docs, cap):
            (heldout if _split_name(key) == "heldout" else train).append({"id": key, "text": text})
    elif name == "math":
        train = [
            {"id": f"math:train:{i}", "text": p.text(), "answer": p.answer, "difficulty": p.difficulty}
            for i, p in enumerate(math_problems(seed, sizes.math_train, "train"))
        ]
        train_questions = {row["text"].split("\n", 1)[0] for row in train}
        heldout = [
            {
                "id": f"math:eval:{i}",
                "text": p.text(),
                "prompt": p.prompt(),
                "answer": p.answer,
                "difficulty": p.difficulty,
            }
            for i, p in enumerate(math_problems(seed, sizes.math_eval * 2, "eval"))
            if f"Problem: {p.question}" not in train_questions
        ][: sizes.math_eval]
    elif name == "qa":
        for key, text in qa_documents(seed, sizes.qa_math):
            (heldout if _split_name(key) == "heldout" else train).append({"id": key, "text": text})
    elif name == "longdoc":
        for stream, count, bucket in (("train", sizes.longdoc_train, train), ("eval", sizes.longdoc_eval, heldout)):
            for key, doc in longdoc_documents(seed, count, stream):
                bucket.append(
                    {
                        "id": key,
                        "text": doc.text + doc.question() + f" {doc.value}",
                        "question": doc.question(),
                        "answer": doc.value,
                        "depth": doc.depth,
                        "words": doc.words,
                        "context": doc.text,
                    }
                )
    else:
        raise ValueError(f"unknown built-in corpus {name!r}; expected one of {', '.join(BUILTINS)}")
    return {
        "name": name,
        "seed": seed,
        "splits": {
            "train": _write_jsonl(out_dir / f"{name}.train.jsonl", iter(train)),
            "heldout": _write_jsonl(out_dir / f"{name}.heldout.jsonl", iter(heldout)),
        },
    }
