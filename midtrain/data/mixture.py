"""Deterministic mixture sampling: (seed, step, rank, world size) -> the sequences of a batch.

Each stream (a packed source) is cut into fixed windows of `sequence_length + 1` tokens (inputs plus
the shifted labels). Global sequence positions are grouped in blocks of `BLOCK` positions; every
block holds exactly the same number of sequences from each stream (the shares apportioned to the
block by largest remainder), in an order shuffled by (seed, block). The k-th draw from a stream
takes window `perm(seed, stream, epoch)[k mod windows]`, with a fresh permutation per epoch. So:

- the batch at any step is a pure function of its arguments: resuming at step k is exact;
- a step's global batch is split into contiguous, disjoint per-rank slices;
- realised shares are within 1/BLOCK of the recipe at every block boundary;
- repetition (epochs per stream) is known before training starts and checked against limits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from midtrain.errors import MidtrainError, short

if TYPE_CHECKING:
    from midtrain.data.packing import Shard

BLOCK = 1000

# Size limits, checked before anything sized by them is allocated (the run specification has the
# same limits, midtrain/train/config.py). A batch is a Python list and an int64 array of this many
# sequences; a stream's permutation is an int64 array of its windows, so a bogus token count or
# batch size would otherwise allocate without bound or appear to hang.
MAX_GLOBAL_BATCH = 1_048_576
MAX_SEQUENCE_LENGTH = 16_777_216
MAX_TOKENS_PER_STEP = 2**31
MAX_WINDOWS = 2**32  # windows per stream: a 32 GiB permutation; no real stream comes close
MAX_SEED = 2**63 - 1


def apportion(shares: dict[str, float], total: int) -> dict[str, int]:
    """Integer counts summing to `total`, proportional to `shares` (largest remainder, ties by name)."""
    norm = sum(shares.values())
    exact = {k: v / norm * total for k, v in shares.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(counts.values())
    order = sorted(shares, key=lambda k: (-(exact[k] - counts[k]), k))
    for key in order[:left]:
        counts[key] += 1
    return counts


class RepetitionError(MidtrainError):
    pass


@dataclass(eq=False)
class MixtureSampler:
    """Sampler for one stage: streams (name -> token count), shares, window length, global batch."""

    stream_tokens: dict[str, int]
    shares: dict[str, float]
    sequence_length: int
    global_batch: int
    seed: int = 0
    max_epochs: dict[str, float] = field(default_factory=dict)
    on_repeat: str = "error"
    names: list[str] = field(init=False)
    windows: dict[str, int] = field(init=False)
    per_block: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self._check_sizes()
        missing = [name for name in self.shares if name not in self.stream_tokens]
        if missing:
            raise MidtrainError.single(f"mixture names streams that were not prepared: {', '.join(missing)}")
        self.names = sorted(name for name, share in self.shares.items() if share > 0)
        self.windows = {}
        for name in self.names:
            tokens = self.stream_tokens[name]
            if not _is_int(tokens) or tokens < 0:
                raise MidtrainError.single(
                    f"stream {name!r}: the token count is not valid", expected="an integer ≥ 0", found=short(tokens)
                )
            count = (tokens - 1) // self.sequence_length
            if count > MAX_WINDOWS:
                raise MidtrainError.single(
                    f"stream {name!r} has {tokens:,} tokens: too many sequences of {self.sequence_length} to sample",
                    expected=f"at most {MAX_WINDOWS:,} sequences",
                    found=f"{count:,}",
                )
            if count < 1:
                raise MidtrainError.single(
                    f"stream {name!r} has {self.stream_tokens[name]} tokens, fewer than one sequence of {self.sequence_length + 1}"
                )
            self.windows[name] = count
        self.per_block = apportion({n: self.shares[n] for n in self.names}, BLOCK)
        self._stream_index = {name: i for i, name in enumerate(self.names)}

    def _check_sizes(self) -> None:
        """Every size and number the sampler allocates by or computes with, checked up front."""

        def bad(what: str, expected: str, found: object) -> MidtrainError:
            return MidtrainError.single(
                f"mixture sampler: {what} is out of range", expected=expected, found=short(found)
            )

        for what, value, top in (
            ("sequence_length", self.sequence_length, MAX_SEQUENCE_LENGTH),
            ("global_batch", self.global_batch, MAX_GLOBAL_BATCH),
        ):
            if not _is_int(value) or not 1 <= value <= top:
                raise bad(what, f"an integer from 1 to {top:,}", value)
        if self.global_batch * self.sequence_length > MAX_TOKENS_PER_STEP:
            raise bad(
                "global_batch × sequence_length (tokens per step)",
                f"at most {MAX_TOKENS_PER_STEP:,}",
                self.global_batch * self.sequence_length,
            )
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise bad("seed", f"an integer from 0 to {MAX_SEED:,}", self.seed)
        if not isinstance(self.shares, dict) or not self.shares:
            raise bad("shares", "a mapping of stream names to shares", self.shares)
        for name, share in self.shares.items():
            if not isinstance(name, str) or not name.strip():
                raise bad("a stream name", "a non-empty name", name)
            if not _is_number(share) or not math.isfinite(share) or share < 0:
                raise bad(f"share of {name!r}", "a finite number ≥ 0", share)
        if not any(share > 0 for share in self.shares.values()):
            raise bad("shares", "at least one share > 0", self.shares)
        if not isinstance(self.max_epochs, dict):
            raise bad("max_epochs", "a mapping of stream names to epochs", self.max_epochs)
        for name, limit in self.max_epochs.items():
            if not _is_number(limit) or math.isnan(limit) or limit < 0:
                raise bad(f"max_epochs of {name!r}", "a number ≥ 0", limit)
        if self.on_repeat not in ("error", "warn"):
            raise bad("on_repeat", "error or warn", self.on_repeat)

    # ---- the pure mapping ----

    @lru_cache(maxsize=8)  # noqa: B019 (bounded: keeps at most 8 samplers alive; one lives for a whole run)
    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Stream id and within-stream draw number for every position of one block."""
        labels = np.concatenate([np.full(self.per_block[n], i, dtype=np.int32) for i, n in enumerate(self.names)])
        rng = np.random.default_rng([self.seed, 7919, block])
        rng.shuffle(labels)
        draws = np.empty(BLOCK, dtype=np.int64)
        for i, name in enumerate(self.names):
            where = np.nonzero(labels == i)[0]
            draws[where] = block * self.per_block[name] + np.arange(where.size)
        return labels, draws

    @lru_cache(maxsize=64)  # noqa: B019 (bounded, as above)
    def _permutation(self, stream: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 104729, stream, epoch])
        return rng.permutation(self.windows[self.names[stream]])

    def positions(self, start: int, count: int) -> list[tuple[str, int]]:
        """(stream, window) for global sequence positions start .. start + count - 1."""
        if not _is_int(start) or not _is_int(count) or start < 0 or not 0 <= count <= MAX_GLOBAL_BATCH:
            raise MidtrainError.single(
                "mixture sampler: positions out of range",
                expected=f"start ≥ 0 and a count from 0 to {MAX_GLOBAL_BATCH:,}",
                found=f"start {short(start)}, count {short(count)}",
            )
        out: list[tuple[str, int]] = []
        position = start
        end = start + count
        while position < end:
            block, offset = divmod(position, BLOCK)
            take = min(BLOCK - offset, end - position)
            labels, draws = self._block(block)
            for label, draw in zip(labels[offset : offset + take].tolist(), draws[offset : offset + take].tolist()):
                windows = self.windows[self.names[label]]
                epoch, index = divmod(draw, windows)
                out.append((self.names[label], int(self._permutation(label, epoch)[index])))
            position += take
        return out

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> list[tuple[str, int]]:
        """This rank's share of the global batch at `step` (contiguous, disjoint slices)."""
        if not _is_int(world_size) or world_size < 1 or not _is_int(rank) or not 0 <= rank < world_size:
            raise MidtrainError.single(
                "mixture sampler: rank out of range",
                expected="0 ≤ rank < world size, world size ≥ 1",
                found=f"rank {short(rank)}, world size {short(world_size)}",
            )
        if not _is_int(step) or step < 0:
            raise MidtrainError.single(
                "mixture sampler: step out of range", expected="an integer ≥ 0", found=short(step)
            )
        if self.global_batch % world_size:
            raise MidtrainError.single(
                f"global batch {self.global_batch} does not split evenly over {world_size} ranks",
                expected=f"a multiple of {world_size}",
                found=str(self.global_batch),
            )
        per_rank = self.global_batch // world_size
        return self.positions(step * self.global_batch + rank * per_rank, per_rank)

    # ---- accounting ----

    def draws(self, sequences: int) -> dict[str, int]:
        """How many sequences each stream contributes to the first `sequences` positions."""
        blocks, rest = divmod(sequences, BLOCK)
        counts = {n: blocks * self.per_block[n] for n in self.names}
        if rest:
            labels, _ = self._block(blocks)
            found = np.bincount(labels[:rest], minlength=len(self.names))
            for i, name in enumerate(self.names):
                counts[name] += int(found[i])
        return counts

    def epochs(self, steps: int) -> dict[str, float]:
        """Passes over each stream's windows after `steps` steps."""
        return {n: c / self.windows[n] for n, c in self.draws(steps * self.global_batch).items()}

    def check_repetition(self, steps: int) -> dict[str, float]:
        """Raise (or warn, per `on_repeat`) when a stream would be repeated more than allowed."""
        epochs = self.epochs(steps)
        over = {n: e for n, e in epochs.items() if n in self.max_epochs and e > self.max_epochs[n] + 1e-9}
        if over:
            text = "; ".join(
                f"{n}: {e:.2f} epochs > {self.max_epochs[n]:g} allowed ({self.stream_tokens[n]:,} tokens)"
                for n, e in over.items()
            )
            message = (
                f"the budget needs more repetition than allowed: {text}. Add data, lower the budget or raise max_epochs"
            )
            if self.on_repeat == "error":
                raise RepetitionError.single(message)
            warnings.warn(message, stacklevel=2)
        return epochs

    def realised_shares(self, sequences: int) -> dict[str, float]:
        counts = self.draws(sequences)
        return {n: c / sequences for n, c in counts.items()}


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def gather(shards: Mapping[str, Shard], picks: Sequence[tuple[str, int]], sequence_length: int) -> np.ndarray:
    """Token windows [len(picks), sequence_length + 1] as int64, read from memory-mapped shards."""
    if not _is_int(sequence_length) or not 1 <= sequence_length <= MAX_SEQUENCE_LENGTH:
        raise MidtrainError.single(
            "gather: sequence_length is out of range",
            expected=f"an integer from 1 to {MAX_SEQUENCE_LENGTH:,}",
            found=short(sequence_length),
        )
    if len(picks) > MAX_GLOBAL_BATCH or len(picks) * sequence_length > MAX_TOKENS_PER_STEP:
        raise MidtrainError.single(
            "gather: batch too large",
            found=f"{len(picks):,} sequences of {sequence_length:,} tokens",
            expected=f"at most {MAX_GLOBAL_BATCH:,} sequences and {MAX_TOKENS_PER_STEP:,} tokens",
        )
    out = np.empty((len(picks), sequence_length + 1), dtype=np.int64)
    for row, (name, window) in enumerate(picks):
        start = window * sequence_length
        out[row] = shards[name].tokens[start : start + sequence_length + 1]
    return out
