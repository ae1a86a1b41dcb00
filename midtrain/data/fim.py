"""Fill-in-the-middle (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle").

FIM is applied where the trainer reads its data: to the token windows of a batch (`MixtureSampler.read`),
after the mixture sampler picked them and before they reach the model. The packed streams are not
changed, so one prepared directory serves runs with and without FIM, at any rate.

Where the documents are: a packed stream holds every document followed by EOS, and a window of
`sequence_length + 1` tokens is a slice of it. So the documents of a window are its EOS-delimited
spans (the first and the last may be pieces of longer documents, as in Megatron-LM's FIM).

- level `document`: each non-empty span is rearranged with probability `rate`; its EOS stays after
  it. Every rearranged span adds three sentinel tokens, so the row is cut back to its length at the
  end (the last tokens of the window are dropped, as in Megatron-LM / StarCoder).
- level `context`: the whole window is one span, rearranged with probability `rate`, EOS tokens and
  all. Its last three tokens make room for the sentinels, so nothing else of the window is lost.

A span is cut at two positions drawn uniformly from 0..n (n = its length) and sorted: prefix,
middle, suffix (any may be empty). The layouts (token ids; `P`, `S`, `M` are the sentinels):

- PSM: `P prefix S suffix M middle`
- SPM, with probability `spm_rate` among the rearranged spans: `P S suffix M prefix middle`, the
  variant of the paper's Appendix D that keeps prefix and middle contiguous (also the one of
  Megatron-LM, StarCoder and DeepSeek-Coder).

Every choice (rearrange or not, PSM or SPM, the two cuts) is a hash of (data seed, the sequence's
global position, the span's index in it), so a batch reads the same after a resume and on any rank.
All work is vectorised over the batch: no Python loop over tokens or spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    from midtrain.data.tokenizer import FastTokenizer

DEFAULT_PREFIX = "<|fim_prefix|>"
DEFAULT_MIDDLE = "<|fim_middle|>"
DEFAULT_SUFFIX = "<|fim_suffix|>"
SENTINELS = 3  # tokens a rearranged span gains

_TAG = np.uint64(0x46494D5F2D2D2D31)  # "FIM_---1": keeps these hashes apart from other uses of the seed
_SELECT, _SPM, _CUT_A, _CUT_B = 0, 1, 2, 3


class FimSettings(Protocol):
    """What `resolve_fim` reads (the RunSpec's `fim`, midtrain/train/config.py:FimSpec)."""

    @property
    def rate(self) -> float: ...
    @property
    def spm_rate(self) -> float: ...
    @property
    def level(self) -> Literal["document", "context"]: ...
    @property
    def prefix(self) -> str: ...
    @property
    def middle(self) -> str: ...
    @property
    def suffix(self) -> str: ...
    @property
    def streams(self) -> list[str] | None: ...


@dataclass(frozen=True)
class FimPlan:
    """FIM with its sentinel token ids resolved; `apply` rearranges a batch of token windows."""

    rate: float
    spm_rate: float
    level: Literal["document", "context"]
    prefix_id: int
    middle_id: int
    suffix_id: int
    eos_id: int
    seed: int = 0
    streams: frozenset[str] | None = None  # None: every stream

    def apply(self, windows: np.ndarray, streams: Sequence[str], keys: np.ndarray) -> np.ndarray:
        """`windows` [rows, length] with FIM applied to the rows of the plan's streams; the same shape.

        `streams[r]` is the stream row r was read from, `keys[r]` its global sequence position (what
        the random choices are derived from)."""
        if windows.ndim != 2 or len(streams) != windows.shape[0] or keys.shape != (windows.shape[0],):
            raise ValueError("fim: windows, streams and keys do not match")
        if self.rate <= 0 or windows.shape[0] == 0:
            return windows
        if self.streams is None:
            rows = np.arange(windows.shape[0])
        else:
            rows = np.array([r for r, name in enumerate(streams) if name in self.streams], dtype=np.int64)
        if rows.size == 0:
            return windows
        out = windows.copy()
        out[rows] = self._rearrange(windows[rows], keys[rows].astype(np.uint64))
        return out

    # ---- the spans of each row, and what happens to them ----

    def _spans(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row, start, end, index in its row) of every span that may be rearranged, sorted by row and start."""
        rows, width = windows.shape
        if self.level == "context":
            if width <= SENTINELS:
                raise MidtrainError.single(
                    "fim: context-level FIM needs windows longer than its three sentinel tokens",
                    expected=f"sequence_length ≥ {SENTINELS}",
                    found=str(width - 1),
                )
            row = np.arange(rows, dtype=np.int64)
            return row, np.zeros(rows, np.int64), np.full(rows, width - SENTINELS, np.int64), np.zeros(rows, np.int64)
        text = windows != self.eos_id
        before = np.zeros_like(text)
        before[:, 1:] = text[:, :-1]
        after = np.zeros_like(text)
        after[:, :-1] = text[:, 1:]
        row, start = np.nonzero(text & ~before)  # row-major: sorted by row, then start
        _, last = np.nonzero(text & ~after)
        first_of_row = np.searchsorted(row, row, side="left")
        return (
            row.astype(np.int64),
            start.astype(np.int64),
            last.astype(np.int64) + 1,
            np.arange(row.size) - first_of_row,
        )

    def _rearrange(self, windows: np.ndarray, keys: np.ndarray) -> np.ndarray:
        row, start, end, index = self._spans(windows)
        with np.errstate(over="ignore"):
            salt = _mix(keys[row] + np.uint64(0x9E3779B97F4A7C15)) ^ index.astype(np.uint64)
        chosen = _uniform(self.seed, salt, _SELECT) < self.rate
        row, start, end, salt = row[chosen], start[chosen], end[chosen], salt[chosen]
        if row.size == 0:
            return windows
        length = end - start
        cut_a = np.minimum((_uniform(self.seed, salt, _CUT_A) * (length + 1)).astype(np.int64), length)
        cut_b = np.minimum((_uniform(self.seed, salt, _CUT_B) * (length + 1)).astype(np.int64), length)
        middle_start = start + np.minimum(cut_a, cut_b)
        suffix_start = start + np.maximum(cut_a, cut_b)
        spm = _uniform(self.seed, salt, _SPM) < self.spm_rate
        return _assemble(
            windows, row, start, middle_start, suffix_start, end, spm, (self.prefix_id, self.middle_id, self.suffix_id)
        )


def _assemble(
    windows: np.ndarray,
    row: np.ndarray,
    start: np.ndarray,
    middle_start: np.ndarray,
    suffix_start: np.ndarray,
    end: np.ndarray,
    spm: np.ndarray,
    sentinels: tuple[int, int, int],
) -> np.ndarray:
    """Each row rewritten as segments: the text before a span, the span's six pieces (three
    sentinels, three slices), ..., the text after the last span; then cut back to the row's width.

    A segment is (row, source start, length, token): token ≥ 0 is one sentinel, -1 copies
    `length` tokens from `source start` of the row. Spans are sorted by row and start, disjoint."""
    rows, width = windows.shape
    prefix_id, middle_id, suffix_id = sentinels
    spans = row.size
    previous_end = np.zeros(spans, np.int64)
    same_row = np.zeros(spans, bool)
    same_row[1:] = row[1:] == row[:-1]
    previous_end[1:] = np.where(same_row[1:], end[:-1], 0)

    zero = np.zeros(spans, np.int64)
    one = np.ones(spans, np.int64)
    none = np.full(spans, -1, np.int64)

    def sentinel(token: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return zero, one, np.full(spans, token, np.int64)

    def piece(source: np.ndarray, until: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return source, until - source, none

    prefix, middle, suffix = piece(start, middle_start), piece(middle_start, suffix_start), piece(suffix_start, end)
    psm = [sentinel(prefix_id), prefix, sentinel(suffix_id), suffix, sentinel(middle_id), middle]
    spm_order = [sentinel(prefix_id), sentinel(suffix_id), suffix, sentinel(middle_id), prefix, middle]
    parts = [piece(previous_end, start)] + [
        tuple(np.where(spm, b, a) for a, b in zip(p, s)) for p, s in zip(psm, spm_order)
    ]
    # segments of the spans: [spans, 7] in span order; then one tail segment per row
    source = np.stack([p[0] for p in parts], axis=1).reshape(-1)
    length = np.stack([p[1] for p in parts], axis=1).reshape(-1)
    token = np.stack([p[2] for p in parts], axis=1).reshape(-1)
    owner = np.repeat(row, 7)
    order_in_row = np.arange(spans * 7, dtype=np.int64)
    last_end = np.zeros(rows, np.int64)
    is_last = np.ones(spans, bool)
    is_last[:-1] = row[:-1] != row[1:]
    last_end[row[is_last]] = end[is_last]
    source = np.concatenate([source, last_end])
    length = np.concatenate([length, width - last_end])
    token = np.concatenate([token, np.full(rows, -1, np.int64)])
    owner = np.concatenate([owner, np.arange(rows, dtype=np.int64)])
    order_in_row = np.concatenate([order_in_row, np.full(rows, spans * 7, np.int64)])
    order = np.lexsort((order_in_row, owner))
    source, length, token, owner = source[order], length[order], token[order], owner[order]

    segment = np.repeat(np.arange(length.size), length)
    first = np.cumsum(length) - length
    offset = np.arange(segment.size, dtype=np.int64) - first[segment]
    flat_row = owner[segment]
    column = np.where(token[segment] >= 0, 0, source[segment] + offset)
    flat = np.where(token[segment] >= 0, token[segment], windows[flat_row, column])
    row_length = np.bincount(owner, weights=length, minlength=rows).astype(np.int64)
    row_start = np.cumsum(row_length) - row_length
    return flat[row_start[:, None] + np.arange(width)[None, :]].astype(windows.dtype, copy=False)


def _mix(value: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return value ^ (value >> np.uint64(31))


def _uniform(seed: int, salt: np.ndarray, purpose: int) -> np.ndarray:
    """Uniform floats in [0, 1), one per salt: a hash of (seed, salt, purpose)."""
    with np.errstate(over="ignore"):
        base = _mix(np.full(salt.shape, np.uint64(seed), np.uint64) ^ _TAG)
        value = _mix(base ^ salt.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(purpose + 1))
    return (value >> np.uint64(11)).astype(np.float64) * 2.0**-53


def resolve_fim(
    settings: FimSettings | None, tokenizer: FastTokenizer, seed: int, run_streams: Sequence[str]
) -> FimPlan | None:
    """The plan for a run's `fim` settings: sentinel texts resolved to ids of the run's tokenizer.

    None when there is nothing to do (no settings, or rate 0)."""
    if settings is None or settings.rate <= 0:
        return None
    ids: dict[str, int] = {}
    for role in ("prefix", "middle", "suffix"):
        text = getattr(settings, role)
        token = tokenizer.token_id(text)
        if token is None:
            raise MidtrainError.single(
                f"fim.{role}: the sentinel {text!r} is not a token of the tokenizer {tokenizer.source}",
                expected="a single token of its vocabulary: give the recipe's fim.tokens this tokenizer's sentinels",
                found=f"{text!r} encodes as {len(tokenizer.encode(text))} ordinary tokens",
            )
        ids[role] = int(token)
    if len(set(ids.values())) < 3 or tokenizer.eos_id in ids.values():
        raise MidtrainError.single(
            f"fim: the sentinels must be three different tokens, none of them end-of-text, in {tokenizer.source}",
            found=", ".join(f"{role} {getattr(settings, role)!r} = {token}" for role, token in ids.items())
            + f", eos = {tokenizer.eos_id}",
        )
    streams = None
    if settings.streams is not None:
        unknown = [name for name in settings.streams if name not in run_streams]
        if unknown:
            raise MidtrainError.single(
                "fim.streams names streams the run does not mix",
                expected=", ".join(sorted(run_streams)),
                found=", ".join(unknown),
            )
        streams = frozenset(settings.streams)
    return FimPlan(
        rate=settings.rate,
        spm_rate=settings.spm_rate,
        level=settings.level,
        prefix_id=ids["prefix"],
        middle_id=ids["middle"],
        suffix_id=ids["suffix"],
        eos_id=tokenizer.eos_id,
        seed=seed,
        streams=streams,
    )
