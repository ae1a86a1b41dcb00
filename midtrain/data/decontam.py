"""n-gram decontamination of training documents against evaluation sets.

Words are lower-cased alphanumeric runs; an n-gram (default n = 13, as in GPT-3 and later reports)
is hashed to 64 bits: each distinct word once with BLAKE2b, then every n-gram of a document at once
as a polynomial of its words' hashes modulo 2^64 (numpy, no Python loop over n-grams: several times
faster than hashing each n-gram's text, and the same in every process, unlike Python's `hash`). A training document is contaminated when it contains at least `threshold`
of some evaluation item's n-grams (default 0.5: most of an item appears in it). Items shorter than
n words are matched whole. Contaminated documents are dropped (or only flagged), and a report
counts them per source.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    import numpy as np

_WORDS = re.compile(r"[a-z0-9]+")
CHUNK = 512  # documents judged together by filter_documents
MAX_EXAMPLES = 50  # contaminated documents listed in the report, in processing order


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


HASH_VERSION = 2  # saved indexes record it: hashes of another version never match
_MULTIPLIER = 0x9E3779B97F4A7C15  # odd, so the polynomial keeps every bit of the last word


_WORD_HASHES: dict[str, int] = {}  # every distinct word seen by this process, hashed once


def _word_hash(word: str) -> int:
    value = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little") or 1
    if len(_WORD_HASHES) < 1 << 22:  # a bounded cache: natural text has far fewer distinct words
        _WORD_HASHES[word] = value
    return value


def ngram_array(text: str, n: int) -> np.ndarray:
    """The distinct 64-bit hashes of a text's word n-grams (of the whole text when it has fewer
    than n words), as a sorted uint64 array."""
    import numpy as np

    tokens = words(text)
    if not tokens:
        return np.empty(0, dtype=np.uint64)
    known = _WORD_HASHES.get
    values = np.array([known(w) or _word_hash(w) for w in tokens], dtype=np.uint64)
    width = min(n, len(tokens))
    count = len(tokens) - width + 1
    multiplier = np.uint64(_MULTIPLIER)
    grams = np.full(count, width, dtype=np.uint64)  # the length, so a short text differs from its own prefix
    with np.errstate(over="ignore"):
        for k in range(width):
            grams = grams * multiplier + values[k : k + count]
    return np.unique(grams)


def ngram_hashes(text: str, n: int) -> set[int]:
    """`ngram_array` as a set of Python ints."""
    return set(ngram_array(text, n).tolist())


@dataclass
class EvalIndex:
    """n-gram hash -> evaluation items containing it."""

    n: int = 13
    items: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    index: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    _keys: np.ndarray | None = field(default=None, repr=False, compare=False)

    def add(self, item_id: str, text: str) -> None:
        hashes = ngram_hashes(text, self.n)
        if not hashes:
            return
        number = len(self.items)
        self.items.append(item_id)
        self.sizes.append(len(hashes))
        for h in hashes:
            self.index[h].append(number)

    def _sorted_keys(self) -> np.ndarray:
        import numpy as np

        if self._keys is None or len(self._keys) != len(self.index):  # sorted once, after the last add
            self._keys = np.sort(np.fromiter(self.index.keys(), dtype=np.uint64, count=len(self.index)))
        return self._keys

    def _known(self, grams: np.ndarray) -> np.ndarray:
        """The entries of `grams` that are keys of the index (binary search in the sorted keys)."""
        import numpy as np

        keys = self._sorted_keys()
        if not len(keys) or not len(grams):
            return grams[:0]
        at = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
        return grams[keys[at] == grams]

    def _worst(self, matched: Iterable[int]) -> tuple[float, str | None]:
        """(largest share, item id) over the items containing the document's distinct `matched` n-grams."""
        hits: Counter[int] = Counter()
        for h in matched:
            for number in self.index.get(h, ()):
                hits[number] += 1
        if not hits:
            return 0.0, None
        number, count = max(hits.items(), key=lambda kv: (kv[1] / self.sizes[kv[0]], -kv[0]))
        return count / self.sizes[number], self.items[number]

    def worst_overlap(self, text: str) -> tuple[float, str | None]:
        """Largest share of any evaluation item's n-grams found in `text`, and that item's id.
        The document's n-grams are matched against the index's keys in numpy (most documents share
        none); only the matches are looked up one by one."""
        return self._worst(self._known(ngram_array(text, self.n)).tolist())

    def worst_overlaps(self, texts: list[str]) -> list[tuple[float, str | None]]:
        """`worst_overlap` of many texts at once: the n-grams of every text of at least n words are
        hashed in one pass over their words laid end to end (n-grams that cross from one text
        into the next are dropped) and matched in one search, which saves numpy's per-call cost on
        the many short documents of a corpus."""
        import numpy as np

        results: list[tuple[float, str | None]] = [(0.0, None)] * len(texts)
        if not len(self._sorted_keys()):
            return results
        n = self.n
        known = _WORD_HASHES.get
        owners: list[int] = []
        pieces: list[list[int]] = []
        for position, text in enumerate(texts):
            tokens = words(text)
            if len(tokens) >= n:
                owners.append(position)
                pieces.append([known(w) or _word_hash(w) for w in tokens])
            elif tokens:
                results[position] = self.worst_overlap(text)
        if not pieces:
            return results
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        values = np.fromiter((v for p in pieces for v in p), dtype=np.uint64, count=int(lengths.sum()))
        count = len(values) - n + 1
        grams = np.full(count, n, dtype=np.uint64)
        multiplier = np.uint64(_MULTIPLIER)
        with np.errstate(over="ignore"):
            for k in range(n):
                grams = grams * multiplier + values[k : k + count]
        ends = np.cumsum(lengths)
        doc = np.repeat(np.arange(len(pieces)), lengths)[:count]
        inside = np.arange(count) + n <= ends[doc]  # the n-gram ends inside the text it starts in
        grams, doc = grams[inside], doc[inside]
        keys = self._sorted_keys()
        at = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
        hit = keys[at] == grams
        matched: dict[int, set[int]] = defaultdict(set)
        for piece, gram in zip(doc[hit].tolist(), grams[hit].tolist()):
            matched[piece].add(gram)
        for piece, grams_of_doc in matched.items():
            results[owners[piece]] = self._worst(grams_of_doc)
        return results


def save_index(index: EvalIndex, handle: IO[bytes]) -> None:
    """Write an index as plain arrays (`.npz`, no pickle: loading it runs no code)."""
    import json

    import numpy as np

    keys = np.fromiter(index.index.keys(), dtype=np.uint64, count=len(index.index))
    lengths = np.fromiter((len(v) for v in index.index.values()), dtype=np.int64, count=len(index.index))
    values = np.fromiter(itertools.chain.from_iterable(index.index.values()), dtype=np.int64, count=int(lengths.sum()))
    np.savez(
        handle,
        version=np.int64(HASH_VERSION),
        n=np.int64(index.n),
        items=np.frombuffer(json.dumps(index.items).encode(), dtype=np.uint8),
        sizes=np.asarray(index.sizes, dtype=np.int64),
        keys=keys,
        lengths=lengths,
        values=values,
    )


def load_index(path: Path) -> EvalIndex:
    """An index written by `save_index`."""
    import json

    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        version = int(data["version"]) if "version" in data.files else 1
        if version != HASH_VERSION:
            raise MidtrainError.single(
                "this decontamination index was written by another midtrain version; prepare the data again",
                file=path,
                expected=f"n-gram hash version {HASH_VERSION}",
                found=f"version {version}",
            )
        index = EvalIndex(n=int(data["n"]), items=json.loads(data["items"].tobytes()), sizes=data["sizes"].tolist())
        values = data["values"].tolist()
        offsets = np.concatenate(([0], np.cumsum(data["lengths"]))).tolist()
        for key, start, end in zip(data["keys"].tolist(), offsets[:-1], offsets[1:]):
            index.index[key] = values[start:end]
    return index


def example(source: str, doc_id: str, eval_id: str | None, overlap: float) -> dict[str, object]:
    """One contaminated document as the report lists it."""
    return {"source": source, "document": doc_id, "eval_item": eval_id, "overlap": round(overlap, 4)}


@dataclass
class Report:
    n: int
    threshold: float
    action: str
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict[str, object]] = field(default_factory=list)

    def record(self, source: str, contaminated: bool, doc_id: str, eval_id: str | None, overlap: float) -> None:
        counts = self.sources.setdefault(source, {"documents": 0, "contaminated": 0})
        counts["documents"] += 1
        if contaminated:
            counts["contaminated"] += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(example(source, doc_id, eval_id, overlap))

    def to_json(self) -> dict[str, object]:
        return {
            "n": self.n,
            "threshold": self.threshold,
            "action": self.action,
            "sources": self.sources,
            "examples": self.examples,
        }


def judge(index: EvalIndex, text: str, threshold: float) -> tuple[bool, float, str | None]:
    """(contaminated, overlap, evaluation item) of one document: the one decision rule, shared by
    the single-process filter and the data engine's decontamination step."""
    overlap, eval_id = index.worst_overlap(text) if index.index else (0.0, None)
    return overlap >= threshold, overlap, eval_id


def filter_documents(
    docs: Iterable[tuple[str, str]],
    index: EvalIndex,
    report: Report,
    source: str,
    threshold: float = 0.5,
    action: str = "drop",
) -> Iterator[tuple[str, str]]:
    """Yield (id, text) of the documents to keep, in order; record every decision in `report`.
    Documents are judged in chunks of `CHUNK` (EvalIndex.worst_overlaps), with the same rule as `judge`."""
    iterator = iter(docs)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        overlaps = index.worst_overlaps([text for _, text in chunk]) if index.index else [(0.0, None)] * len(chunk)
        for (doc_id, text), (overlap, eval_id) in zip(chunk, overlaps):
            contaminated = overlap >= threshold
            report.record(source, contaminated, doc_id, eval_id, overlap)
            if contaminated and action == "drop":
                continue
            yield doc_id, text
