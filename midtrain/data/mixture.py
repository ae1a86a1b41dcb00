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

A mixture ramp (`shares_end`) moves the shares linearly from `shares` at step 0 to `shares_end` at
the run's last step. Then every step is its own block: step s holds `batch(s) × share(s)` sequences
of each stream, the fractions rounded by systematic sampling with a golden-ratio offset per step (a
pure function of the seed and s, exact in sum, unbiased and low-discrepancy over steps). A stream's
draws before step s are a prefix sum over steps, computed in vectorised chunks of `RAMP_CHUNK`
steps, so any step can be read first (resume) and repetition is still known up front.

A batch ramp (`batch_ramp`: (step, global batch) phases) changes the global batch from a step on;
global positions stay contiguous, so the step -> positions mapping is a closed form.

`read` gathers a batch's token windows and applies fill-in-the-middle (midtrain/data/fim.py) when
the sampler carries a FIM plan; each sequence is keyed by its global position, so FIM is exact on
resume too.
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from midtrain.errors import MidtrainError, short

if TYPE_CHECKING:
    from midtrain.data.fim import FimPlan
    from midtrain.data.packing import Shard

BLOCK = 1000
RAMP_CHUNK = 4096  # steps whose per-stream counts a ramped sampler computes at once
GOLDEN = 0.6180339887498949  # the fractional part of the golden ratio: a low-discrepancy step offset

# Size limits, checked before anything sized by them is allocated (the run specification has the
# same limits, midtrain/train/config.py). A batch is a Python list and an int64 array of this many
# sequences; a stream's permutation is an int64 array of its windows, so a bogus token count or
# batch size would otherwise allocate without bound or appear to hang.
MAX_GLOBAL_BATCH = 1_048_576
MAX_SEQUENCE_LENGTH = 16_777_216
MAX_TOKENS_PER_STEP = 2**31
MAX_WINDOWS = 2**32  # windows per stream: a 32 GiB permutation; no real stream comes close
MAX_SEED = 2**63 - 1
MAX_STEPS = 1_000_000_000


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
    """Sampler for one stage: streams (name -> token count), shares, window length, global batch.

    Optional: `shares_end` and `steps` (a mixture ramp over a run of `steps` steps), `batch_ramp`
    ((step, global batch) phases after the first `global_batch`), `fim` (applied by `read`)."""

    stream_tokens: dict[str, int]
    shares: dict[str, float]
    sequence_length: int
    global_batch: int
    seed: int = 0
    max_epochs: dict[str, float] = field(default_factory=dict)
    on_repeat: str = "error"
    shares_end: dict[str, float] | None = None
    steps: int | None = None
    batch_ramp: Sequence[tuple[int, int]] = ()
    fim: FimPlan | None = None
    names: list[str] = field(init=False)
    windows: dict[str, int] = field(init=False)
    per_block: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self._check_sizes()
        named = set(self.shares) | set(self.shares_end or {})
        missing = [name for name in self.shares if name not in self.stream_tokens]
        missing += sorted(name for name in named - set(self.shares) if name not in self.stream_tokens)
        if missing:
            raise MidtrainError.single(f"mixture names streams that were not prepared: {', '.join(missing)}")
        ends = self.shares_end or {}
        self.names = sorted(name for name in named if self.shares.get(name, 0) > 0 or ends.get(name, 0) > 0)
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
        self._stream_index = {name: i for i, name in enumerate(self.names)}
        self._phase_steps = [0] + [int(step) for step, _ in self.batch_ramp]
        self._phase_batch = [self.global_batch] + [int(batch) for _, batch in self.batch_ramp]
        self._phase_start = [0]
        for k in range(1, len(self._phase_steps)):
            span = self._phase_steps[k] - self._phase_steps[k - 1]
            self._phase_start.append(self._phase_start[-1] + span * self._phase_batch[k - 1])
        self.ramped = self.shares_end is not None
        if self.ramped:
            self.per_block = {}
            start = np.array([self.shares.get(n, 0.0) for n in self.names], dtype=np.float64)
            end = np.array([ends.get(n, 0.0) for n in self.names], dtype=np.float64)
            self._share_start, self._share_end = start / start.sum(), end / end.sum()
            self._offset = float(np.random.default_rng([self.seed, 7933]).random())
            self._prefix: dict[int, np.ndarray] = {0: np.zeros(len(self.names), dtype=np.int64)}
        else:
            self.per_block = apportion({n: self.shares[n] for n in self.names}, BLOCK)

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
        _check_shares(self.shares, "shares", bad)
        if self.shares_end is not None:
            _check_shares(self.shares_end, "shares_end", bad)
            if set(self.shares_end) != set(self.shares):
                raise bad(
                    "shares_end (its streams)",
                    f"the streams of shares: {', '.join(sorted(self.shares))}",
                    ", ".join(sorted(self.shares_end)),
                )
            if self.steps is None or not _is_int(self.steps) or not 1 <= self.steps <= MAX_STEPS:
                raise bad(
                    "steps (a mixture ramp needs the run's length)", f"an integer from 1 to {MAX_STEPS:,}", self.steps
                )
        if not isinstance(self.max_epochs, dict):
            raise bad("max_epochs", "a mapping of stream names to epochs", self.max_epochs)
        for name, limit in self.max_epochs.items():
            if not _is_number(limit) or math.isnan(limit) or limit < 0:
                raise bad(f"max_epochs of {name!r}", "a number ≥ 0", limit)
        if self.on_repeat not in ("error", "warn"):
            raise bad("on_repeat", "error or warn", self.on_repeat)
        previous = 0
        for phase in self.batch_ramp:
            if not isinstance(phase, (tuple, list)) or len(phase) != 2:
                raise bad("a batch_ramp phase", "a (step, global batch) pair", phase)
            step, batch = phase
            if not _is_int(step) or not previous < step <= MAX_STEPS:
                raise bad("a batch_ramp step", f"an integer from {previous + 1} to {MAX_STEPS:,}, increasing", step)
            if not _is_int(batch) or not 1 <= batch <= MAX_GLOBAL_BATCH:
                raise bad("a batch_ramp global batch", f"an integer from 1 to {MAX_GLOBAL_BATCH:,}", batch)
            if batch * self.sequence_length > MAX_TOKENS_PER_STEP:
                raise bad(
                    "a batch_ramp global batch × sequence_length",
                    f"at most {MAX_TOKENS_PER_STEP:,}",
                    batch * self.sequence_length,
                )
            previous = step

    # ---- the batch schedule (a batch ramp) ----

    def batch_size(self, step: int) -> int:
        """The global batch at `step`."""
        return self._phase_batch[bisect_right(self._phase_steps, step) - 1]

    def start_of(self, step: int) -> int:
        """The global position of the first sequence of `step`."""
        k = bisect_right(self._phase_steps, step) - 1
        return self._phase_start[k] + (step - self._phase_steps[k]) * self._phase_batch[k]

    def step_of(self, position: int) -> int:
        """The step whose batch holds global position `position`."""
        k = bisect_right(self._phase_start, position) - 1
        return self._phase_steps[k] + (position - self._phase_start[k]) // self._phase_batch[k]

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

    @lru_cache(maxsize=4)  # noqa: B019 (bounded, as above)
    def _ramp_counts(self, chunk: int) -> np.ndarray:
        """Sequences of each stream in each step of one chunk of `RAMP_CHUNK` steps, [steps, streams].

        Step s holds batch(s) × share(s) of a stream, where share(s) moves linearly from the start
        to the end shares; the fractions are rounded by systematic sampling (one offset per step from
        a golden-ratio sequence), so every count is ≥ 0, every row sums to batch(s) exactly, and
        the expected count is the exact share."""
        steps = np.arange(chunk * RAMP_CHUNK, (chunk + 1) * RAMP_CHUNK, dtype=np.int64)
        index = np.searchsorted(np.asarray(self._phase_steps, dtype=np.int64), steps, side="right") - 1
        batch = np.asarray(self._phase_batch, dtype=np.int64)[index]
        last = (self.steps or 1) - 1
        t = np.clip(steps / last, 0.0, 1.0) if last > 0 else np.zeros(steps.size)
        share = np.maximum(self._share_start + (self._share_end - self._share_start) * t[:, None], 0.0)
        exact = batch[:, None] * share
        base = np.floor(exact).astype(np.int64)
        extra = batch - base.sum(axis=1)  # ≥ 0: the floors never sum past the batch
        rest = exact - base
        total = rest.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        weight = np.where(total[:, None] > 0, rest * (extra / safe)[:, None], extra[:, None] / len(self.names))
        cumulative = np.minimum(np.cumsum(weight, axis=1), extra[:, None])
        cumulative[:, -1] = extra
        offset = (self._offset + steps * GOLDEN) % 1.0
        taken = np.ceil(cumulative - offset[:, None]).astype(np.int64)
        extras = np.diff(taken, axis=1, prepend=0)
        return base + extras

    def _ramp_before(self, step: int) -> np.ndarray:
        """Draws of each stream in steps 0 .. step - 1 (a ramped sampler)."""
        chunk, row = divmod(step, RAMP_CHUNK)
        known = max(c for c in self._prefix if c <= chunk)
        while known < chunk:
            self._prefix[known + 1] = self._prefix[known] + self._ramp_counts(known).sum(axis=0)
            known += 1
        return self._prefix[chunk] + self._ramp_counts(chunk)[:row].sum(axis=0)

    @lru_cache(maxsize=8)  # noqa: B019 (bounded, as above)
    def _step_block(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Stream id and within-stream draw number for every position of one step (a ramped sampler)."""
        counts = self._ramp_counts(step // RAMP_CHUNK)[step % RAMP_CHUNK]
        labels = np.repeat(np.arange(len(self.names), dtype=np.int32), counts)
        rng = np.random.default_rng([self.seed, 7927, step])
        rng.shuffle(labels)
        before = self._ramp_before(step)
        draws = np.empty(labels.size, dtype=np.int64)
        for i in range(len(self.names)):
            where = np.nonzero(labels == i)[0]
            draws[where] = before[i] + np.arange(where.size)
        return labels, draws

    def _segment(self, position: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The block (or, ramped, the step) holding `position`: its labels, draws, and the offset of `position`."""
        if self.ramped:
            step = self.step_of(position)
            labels, draws = self._step_block(step)
            return labels, draws, position - self.start_of(step)
        block, offset = divmod(position, BLOCK)
        labels, draws = self._block(block)
        return labels, draws, offset

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
            labels, draws, offset = self._segment(position)
            take = min(labels.size - offset, end - position)
            for label, draw in zip(labels[offset : offset + take].tolist(), draws[offset : offset + take].tolist()):
                windows = self.windows[self.names[label]]
                epoch, index = divmod(draw, windows)
                out.append((self.names[label], int(self._permutation(label, epoch)[index])))
            position += take
        return out

    def rank_slice(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
        """(first global position, count) of this rank's share of the global batch at `step`."""
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
        batch = self.batch_size(step)
        if batch % world_size:
            raise MidtrainError.single(
                f"global batch {batch} does not split evenly over {world_size} ranks",
                expected=f"a multiple of {world_size}",
                found=str(batch),
            )
        per_rank = batch // world_size
        return self.start_of(step) + rank * per_rank, per_rank

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> list[tuple[str, int]]:
        """This rank's share of the global batch at `step` (contiguous, disjoint slices)."""
        return self.positions(*self.rank_slice(step, rank, world_size))

    def read(self, shards: Mapping[str, Shard], step: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """The token windows [batch, sequence_length + 1] this rank trains on at `step`, with
        fill-in-the-middle applied when the sampler has a FIM plan."""
        start, count = self.rank_slice(step, rank, world_size)
        picks = self.positions(start, count)
        windows = gather(shards, picks, self.sequence_length)
        if self.fim is None:
            return windows
        return self.fim.apply(windows, [name for name, _ in picks], np.arange(start, start + count, dtype=np.int64))

    # ---- accounting ----

    def draws(self, sequences: int) -> dict[str, int]:
        """How many sequences each stream contributes to the first `sequences` positions."""
        if self.ramped:
            step = self.step_of(sequences)
            before = self._ramp_before(step)
            labels, _ = self._step_block(step)
            found = np.bincount(labels[: sequences - self.start_of(step)], minlength=len(self.names))
            return {name: int(before[i] + found[i]) for i, name in enumerate(self.names)}
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
        return {n: c / self.windows[n] for n, c in self.draws(self.start_of(steps)).items()}

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


def _check_shares(shares: object, what: str, bad: Callable[[str, str, object], MidtrainError]) -> None:
    if not isinstance(shares, dict) or not shares:
        raise bad(what, "a mapping of stream names to shares", shares)
    for name, share in shares.items():
        if not isinstance(name, str) or not name.strip():
            raise bad("a stream name", "a non-empty name", name)
        if not _is_number(share) or not math.isfinite(share) or share < 0:
            raise bad(f"{'share' if what == 'shares' else what} of {name!r}", "a finite number ≥ 0", share)
    if not any(share > 0 for share in shares.values()):
        raise bad(what, "at least one share > 0", shares)


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
