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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

from midtrain.errors import MidtrainError

BLOCK = 1000


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
        missing = [name for name in self.shares if name not in self.stream_tokens]
        if missing:
            raise MidtrainError.single(f"mixture names streams that were not prepared: {', '.join(missing)}")
        self.names = sorted(name for name, share in self.shares.items() if share > 0)
        self.windows = {}
        for name in self.names:
            count = (self.stream_tokens[name] - 1) // self.sequence_length
            if count < 1:
                raise MidtrainError.single(
                    f"stream {name!r} has {self.stream_tokens[name]} tokens, fewer than one sequence of {self.sequence_length + 1}"
                )
            self.windows[name] = count
        self.per_block = apportion({n: self.shares[n] for n in self.names}, BLOCK)
        self._stream_index = {name: i for i, name in enumerate(self.names)}

    # ---- the pure mapping ----

    @lru_cache(maxsize=8)
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

    @lru_cache(maxsize=64)
    def _permutation(self, stream: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 104729, stream, epoch])
        return rng.permutation(self.windows[self.names[stream]])

    def positions(self, start: int, count: int) -> list[tuple[str, int]]:
        """(stream, window) for global sequence positions start .. start + count - 1."""
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
        if self.global_batch % world_size:
            raise MidtrainError.single(
                f"global batch {self.global_batch} does not split evenly over {world_size} ranks",
                expected=f"a multiple of {world_size}", found=str(self.global_batch),
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
            text = "; ".join(f"{n}: {e:.2f} epochs > {self.max_epochs[n]:g} allowed ({self.stream_tokens[n]:,} tokens)" for n, e in over.items())
            message = f"the budget needs more repetition than allowed: {text}. Add data, lower the budget or raise max_epochs"
            if self.on_repeat == "error":
                raise RepetitionError.single(message)
            warnings.warn(message, stacklevel=2)
        return epochs

    def realised_shares(self, sequences: int) -> dict[str, float]:
        counts = self.draws(sequences)
        return {n: c / sequences for n, c in counts.items()}


def gather(shards: dict[str, object], picks: Sequence[tuple[str, int]], sequence_length: int) -> np.ndarray:
    """Token windows [len(picks), sequence_length + 1] as int64, read from memory-mapped shards."""
    out = np.empty((len(picks), sequence_length + 1), dtype=np.int64)
    for row, (name, window) in enumerate(picks):
        start = window * sequence_length
        out[row] = shards[name].tokens[start : start + sequence_length + 1]  # type: ignore[attr-defined]
    return out
