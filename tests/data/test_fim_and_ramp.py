"""Fill-in-the-middle in the data path (midtrain/data/fim.py) and the mixture ramp / batch ramp of the sampler."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from midtrain.data.fim import FimPlan, resolve_fim
from midtrain.data.mixture import RAMP_CHUNK, MixtureSampler, RepetitionError
from midtrain.data.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, load_tokenizer
from midtrain.errors import MidtrainError

EOS, P, M, S = 0, 2, 3, 4


def plan(**kw: Any) -> FimPlan:
    args: dict[str, Any] = {
        "rate": 1.0,
        "spm_rate": 0.0,
        "level": "document",
        "prefix_id": P,
        "middle_id": M,
        "suffix_id": S,
        "eos_id": EOS,
        "seed": 7,
    }
    args.update(kw)
    return FimPlan(**args)


def documents(rows: int, width: int, seed: int = 0, eos_every: float = 0.04) -> np.ndarray:
    """Token windows of ids ≥ 10 (never a sentinel) with EOS-separated documents."""
    rng = np.random.default_rng(seed)
    windows = rng.integers(10, 500, size=(rows, width), dtype=np.int64)
    windows[rng.random((rows, width)) < eos_every] = EOS
    return windows


def spans(row: np.ndarray) -> list[list[int]]:
    """The EOS-delimited pieces of a row (the last one is what follows the last EOS)."""
    out: list[list[int]] = [[]]
    for token in row.tolist():
        if token == EOS:
            out.append([])
        else:
            out[-1].append(token)
    return out


def undo(span: list[int], mode: str = "either") -> tuple[list[int], str]:
    """The original text of one span and its layout ('psm', 'spm', or '' if not rearranged).

    mode 'psm' or 'spm' parses in that layout only; 'either' takes `P S ...` for SPM (a PSM span
    with an empty prefix looks the same, and restores to the same text)."""
    if not span or span[0] != P:
        assert P not in span and S not in span and M not in span, span
        return span, ""
    assert span.count(P) == span.count(S) == span.count(M) == 1, span
    suffix_at, middle_at = span.index(S), span.index(M)
    assert 0 < suffix_at < middle_at, span
    if mode == "spm" or (mode == "either" and suffix_at == 1):
        assert suffix_at == 1, span
        suffix, prefix_middle = span[2:middle_at], span[middle_at + 1 :]
        return prefix_middle + suffix, "spm"
    prefix, suffix, middle = span[1:suffix_at], span[suffix_at + 1 : middle_at], span[middle_at + 1 :]
    return prefix + middle + suffix, "psm"


# ---------------------------------------------------------------- FIM layouts


@pytest.mark.parametrize("spm", [False, True])
def test_one_document_in_exact_psm_or_spm_layout(spm: bool) -> None:
    text = list(range(10, 30))
    window = np.array([[*text, EOS]], dtype=np.int64)  # one document, then its EOS
    for key in range(40):
        out = plan(spm_rate=1.0 if spm else 0.0).apply(window, ["a"], np.array([key]))[0].tolist()
        assert len(out) == len(text) + 1
        layouts = []
        for i in range(len(text) + 1):
            for k in range(i, len(text) + 1):
                pre, mid, suf = text[:i], text[i:k], text[k:]
                psm = [P, *pre, S, *suf, M, *mid]
                spm_layout = [P, S, *suf, M, *pre, *mid]
                layouts.append(spm_layout if spm else psm)
        # three sentinels were added, so the row was cut back: the EOS and the last two tokens fell off
        assert out in [layout[: len(out)] for layout in layouts], out


@pytest.mark.parametrize("mode, spm_rate", [("psm", 0.0), ("either", 0.5), ("spm", 1.0)])
def test_document_level_is_lossless_and_keeps_the_length(mode: str, spm_rate: float) -> None:
    windows = documents(32, 129)
    out = plan(spm_rate=spm_rate).apply(windows, ["a"] * 32, np.arange(32))
    assert out.shape == windows.shape and out.dtype == windows.dtype
    layouts: Counter[str] = Counter()
    for before, after in zip(windows, out):
        pieces = spans(after)
        complete = pieces[:-1]  # the piece after the last EOS may have been cut at the end
        restored = []
        for piece in complete:
            text, layout = undo(piece, mode)
            assert layout or not piece  # rate 1: every document is rearranged
            layouts[layout] += 1
            restored += [*text, EOS]
        assert restored == before[: len(restored)].tolist()
        # every document was rearranged (rate 1), and only the sentinels were added
        assert sum(1 for p in complete if p and p[0] == P) == sum(1 for p in spans(before)[: len(complete)] if p)
    assert sum(layouts.values()) - layouts[""] > 100
    if mode == "either":
        assert layouts["psm"] > 20 and layouts["spm"] > 20


def test_context_level_rearranges_the_whole_window_and_loses_nothing_but_room() -> None:
    windows = documents(64, 257)
    out = plan(level="context", rate=0.5, spm_rate=0.5).apply(windows, ["a"] * 64, np.arange(64))
    assert out.shape == windows.shape
    changed = 0
    for before, after in zip(windows.tolist(), out.tolist()):
        if after == before:
            continue
        changed += 1
        assert after[0] == P and after.count(P) == after.count(S) == after.count(M) == 1
        if after[1] == S:
            middle_at = after.index(M)
            restored = after[middle_at + 1 :] + after[2:middle_at]
        else:
            suffix_at, middle_at = after.index(S), after.index(M)
            restored = after[1:suffix_at] + after[middle_at + 1 :] + after[suffix_at + 1 : middle_at]
        assert restored == before[: len(before) - 3]  # the last three tokens made room for the sentinels
    assert 20 <= changed <= 44


def test_rates_are_honoured() -> None:
    windows = documents(200, 257, seed=1)
    documents_in = sum(1 for row in windows for piece in spans(row) if piece)
    out = plan(rate=0.3, spm_rate=0.0).apply(windows, ["a"] * 200, np.arange(200))
    rearranged = int((out == P).sum())
    # the rows' last documents may lose their sentinels to the cut at the end: a little under 0.3
    assert 0.25 <= rearranged / documents_in <= 0.33, rearranged / documents_in
    context = plan(level="context", rate=0.4, spm_rate=0.25).apply(windows, ["a"] * 200, np.arange(200))
    fim_rows = context[:, 0] == P
    assert 0.3 <= fim_rows.mean() <= 0.5
    spm_rows = fim_rows & (context[:, 1] == S)
    assert 0.12 <= spm_rows.sum() / fim_rows.sum() <= 0.38


def test_fim_depends_on_seed_and_position_only() -> None:
    windows = documents(16, 129)
    keys = np.arange(100, 116)
    first = plan(rate=0.5, spm_rate=0.5).apply(windows, ["a"] * 16, keys)
    again = plan(rate=0.5, spm_rate=0.5).apply(windows.copy(), ["a"] * 16, keys.copy())
    assert np.array_equal(first, again)
    # one row alone (another rank's slice, or a resume) reads the same as inside the batch
    assert np.array_equal(plan(rate=0.5, spm_rate=0.5).apply(windows[5:6], ["a"], keys[5:6])[0], first[5])
    assert not np.array_equal(plan(rate=0.5, spm_rate=0.5, seed=8).apply(windows, ["a"] * 16, keys), first)
    assert not np.array_equal(plan(rate=0.5, spm_rate=0.5).apply(windows, ["a"] * 16, keys + 1000), first)


def test_fim_only_touches_its_streams() -> None:
    windows = documents(8, 65)
    names = ["code", "prose"] * 4
    out = plan(streams=frozenset({"code"})).apply(windows, names, np.arange(8))
    assert np.array_equal(out[1::2], windows[1::2])
    assert (out[0::2] == P).any(axis=1).all()


# ---------------------------------------------------------------- sentinels in the tokenizer


def test_tiny_tokenizer_has_the_default_sentinels(prepared: Path) -> None:
    tokenizer = load_tokenizer(prepared / "tokenizer")
    ids = [tokenizer.token_id(text) for text in (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX)]
    assert ids == [2, 3, 4]
    assert tokenizer.encode(f"x{FIM_PREFIX}y")[1] == 2  # one special token, never split into bytes
    assert tokenizer.decode([2, 4, 3]) == FIM_PREFIX + FIM_SUFFIX + FIM_MIDDLE


def test_a_missing_sentinel_is_a_clear_error(prepared: Path) -> None:
    from midtrain.train.config import FimSpec

    tokenizer = load_tokenizer(prepared / "tokenizer")
    streams = ["code.train", "prose.train"]
    resolved = resolve_fim(FimSpec(rate=0.5), tokenizer, 3, streams)
    assert resolved is not None and (resolved.prefix_id, resolved.middle_id, resolved.suffix_id) == (2, 3, 4)
    assert resolve_fim(FimSpec(rate=0.0), tokenizer, 3, streams) is None
    deepseek = FimSpec(rate=0.5, prefix="<|fim_begin|>", middle="<|fim_end|>", suffix="<|fim_hole|>")
    with pytest.raises(MidtrainError) as info:
        resolve_fim(deepseek, tokenizer, 3, streams)
    message = str(info.value)
    assert "fim.prefix" in message and "<|fim_begin|>" in message and str(prepared / "tokenizer") in message
    with pytest.raises(MidtrainError, match="three different tokens"):
        resolve_fim(FimSpec(rate=0.5, middle=FIM_PREFIX), tokenizer, 3, streams)
    with pytest.raises(MidtrainError, match="fim.streams"):
        resolve_fim(FimSpec(rate=0.5, streams=["web.train"]), tokenizer, 3, streams)


# ---------------------------------------------------------------- FIM through the run's data


def run_spec(prepared: Path, tmp_path: Path, **overrides: Any) -> Any:
    from midtrain.train.config import RunSpec

    spec: dict[str, Any] = {
        "name": "test/fim",
        "out": str(tmp_path / "run"),
        "tokenizer": str(prepared / "tokenizer"),
        "data": str(prepared),
        "init": {
            "family": "llama",
            "dims": {
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "intermediate_size": 64,
            },
            "vocab_size": 512,
            "max_position_embeddings": 64,
        },
        "streams": {"prose.train": 0.5, "code.train": 0.5},
        "sequence_length": 64,
        "global_batch": 8,
        "micro_batch": 4,
        "steps": 30,
        "schedule": {"type": "constant", "lr": 1e-3},
    }
    spec.update(overrides)
    return RunSpec.model_validate(spec)


def test_the_run_reads_fim_data_exactly_after_a_restart(prepared: Path, tmp_path: Path) -> None:
    from midtrain.data.mixture import gather
    from midtrain.train.workspace import open_data

    spec = run_spec(prepared, tmp_path, fim={"rate": 0.5, "spm_rate": 0.5, "streams": ["code.train"]}, data_seed=4)
    sampler, shards, _ = open_data(spec)
    assert sampler.fim is not None and sampler.fim.streams == {"code.train"}
    reads = [sampler.read(shards, step) for step in range(12)]
    restarted, shards_again, _ = open_data(spec)  # a new process resuming at step 7
    assert all(np.array_equal(restarted.read(shards_again, step), reads[step]) for step in range(7, 12))
    for step, windows in enumerate(reads):
        picks = sampler.batch(step)
        plain = gather(shards, picks, spec.sequence_length)
        assert windows.shape == plain.shape
        for (name, _), row, raw in zip(picks, windows, plain):
            if name == "prose.train":
                assert np.array_equal(row, raw)
    code_rows = [
        row for step in range(12) for (name, _), row in zip(sampler.batch(step), reads[step]) if name == "code.train"
    ]
    assert sum(bool((row == 2).any()) for row in code_rows) > len(code_rows) // 3
    ranks = [sampler.read(shards, 5, rank, 2) for rank in range(2)]
    assert np.array_equal(np.concatenate(ranks), reads[5])
    spec_missing = run_spec(prepared, tmp_path, fim={"rate": 0.5, "prefix": "<|fim_begin|>"})
    with pytest.raises(MidtrainError, match="fim_begin"):
        open_data(spec_missing)


# ---------------------------------------------------------------- the mixture ramp

STREAMS = {"a": 3_000_000, "b": 3_000_000, "c": 3_000_000}


def ramped(**kw: Any) -> MixtureSampler:
    args: dict[str, Any] = {
        "stream_tokens": STREAMS,
        "shares": {"a": 0.8, "b": 0.2, "c": 0.0},
        "shares_end": {"a": 0.1, "b": 0.2, "c": 0.7},
        "steps": 200,
        "sequence_length": 64,
        "global_batch": 20,
        "seed": 5,
    }
    args.update(kw)
    return MixtureSampler(**args)


def counts(sampler: MixtureSampler, steps: range) -> Counter[str]:
    return Counter(name for step in steps for name, _ in sampler.batch(step))


def test_ramp_moves_the_shares_from_start_to_end() -> None:
    s = ramped()
    early, late = counts(s, range(20)), counts(s, range(180, 200))
    assert early["a"] > 0.7 * 400 and early["c"] < 0.1 * 400
    assert late["c"] > 0.6 * 400 and late["a"] < 0.2 * 400
    assert 0.15 * 400 < early["b"] < 0.25 * 400 and 0.15 * 400 < late["b"] < 0.25 * 400
    assert [name for name, _ in s.batch(0)].count("c") == 0  # share 0 at step 0
    # the whole run: the mean of the start and end shares, to within a sequence or two per stream
    total = s.draws(200 * 20)
    for name, share in {"a": 0.45, "b": 0.2, "c": 0.35}.items():
        assert abs(total[name] - share * 4000) <= 3, total
    assert total == counts(s, range(200))
    # every step holds exactly its batch, each stream near its interpolated share
    for step in (0, 57, 123, 199):
        t = step / 199
        got = Counter(name for name, _ in s.batch(step))
        assert sum(got.values()) == 20
        for name in STREAMS:
            want = 20 * ({"a": 0.8, "b": 0.2, "c": 0.0}[name] * (1 - t) + {"a": 0.1, "b": 0.2, "c": 0.7}[name] * t)
            assert abs(got[name] - want) < 1, (step, name, got[name], want)


def test_ramp_resumes_exactly_at_any_step() -> None:
    reader = ramped()
    uninterrupted = [reader.batch(step) for step in range(200)]
    for start in (1, 99, 150):
        resumed = ramped()  # a fresh process, reading step `start` first
        assert [resumed.batch(step) for step in range(start, 200)] == uninterrupted[start:]
    sampler = ramped()
    assert [sampler.batch(step, 1, 2) for step in range(60, 70)] == [b[10:] for b in uninterrupted[60:70]]
    within = [p for batch in uninterrupted for p in batch if p[0] == "c"]
    assert len(within) == len(set(within))  # fewer draws than windows: no window twice
    assert ramped(seed=6).batch(100) != uninterrupted[100]


def test_ramp_across_chunks_and_repetition_accounting() -> None:
    long = ramped(steps=3 * RAMP_CHUNK, global_batch=4, stream_tokens={"a": 64 * 5000 + 1, "b": 10**7, "c": 10**7})
    step = 2 * RAMP_CHUNK + 17
    fresh = ramped(steps=3 * RAMP_CHUNK, global_batch=4, stream_tokens={"a": 64 * 5000 + 1, "b": 10**7, "c": 10**7})
    assert fresh.batch(step) == long.batch(step)
    draws = long.draws(long.start_of(3 * RAMP_CHUNK))
    assert sum(draws.values()) == 12 * RAMP_CHUNK
    assert abs(draws["a"] - 0.45 * 12 * RAMP_CHUNK) <= 3
    epochs = long.epochs(3 * RAMP_CHUNK)
    assert epochs["a"] == pytest.approx(draws["a"] / 5000)
    limited = ramped(
        steps=3 * RAMP_CHUNK,
        global_batch=4,
        stream_tokens={"a": 64 * 5000 + 1, "b": 10**7, "c": 10**7},
        max_epochs={"a": 1.0},
    )
    with pytest.raises(RepetitionError, match="a: .* epochs > 1 allowed"):
        limited.check_repetition(3 * RAMP_CHUNK)
    limited.check_repetition(RAMP_CHUNK // 4)  # early on the run has drawn less than one pass


def test_batch_ramp_positions_and_sizes() -> None:
    for kw in ({}, {"shares_end": None}):
        s = ramped(batch_ramp=[(10, 40), (30, 80)], **kw)
        sizes = [len(s.batch(step)) for step in range(40)]
        assert sizes == [20] * 10 + [40] * 20 + [80] * 10
        assert s.start_of(10) == 200 and s.start_of(30) == 1000 and s.start_of(31) == 1080
        assert all(s.step_of(s.start_of(step)) == step for step in range(40))
        flat = [p for step in range(40) for p in s.batch(step)]
        assert flat == s.positions(0, len(flat))
        assert s.epochs(40) == {n: c / s.windows[n] for n, c in s.draws(len(flat)).items()}
    with pytest.raises(MidtrainError, match="batch_ramp step"):
        ramped(batch_ramp=[(10, 40), (10, 80)])


@pytest.mark.parametrize(
    "changes, found",
    [
        ({"shares_end": {"a": 1.0}}, "a"),
        ({"shares_end": {"a": 0.0, "b": 0.0, "c": 0.0}}, "0.0"),
        ({"shares_end": {"a": float("nan"), "b": 0.5, "c": 0.5}}, "nan"),
        ({"steps": None}, "None"),
        ({"steps": 0}, "0"),
        ({"batch_ramp": [(5, 0)]}, "0"),
    ],
)
def test_bad_ramps(changes: dict[str, Any], found: str) -> None:
    with pytest.raises(MidtrainError) as info:
        ramped(**changes)
    problem = info.value.problems[0]
    assert problem.expected and found in (problem.found or "")


# ---------------------------------------------------------------- through the trainer, with a resume


class Interrupt(Exception):
    pass


def test_training_with_fim_and_a_ramp_resumes_bit_for_bit(prepared: Path, tmp_path: Path) -> None:
    """The trainer reads FIM'd, ramped batches, and a run stopped after a checkpoint and resumed ends
    with the same weights as one that never stopped."""
    from safetensors.torch import load_file

    from midtrain.train.callbacks import Callback
    from midtrain.train.loop import train

    class StopAt(Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_step_end(self, trainer: Any, step: int, result: Any) -> None:
            if step == self.step:
                raise Interrupt

    class Seen(Callback):
        def __init__(self) -> None:
            self.sentinels = 0

        def on_step_start(self, trainer: Any, step: int) -> None:
            self.sentinels += int((trainer.sampler.read(trainer.shards, step) == 2).sum())

    settings = {
        "fim": {"rate": 0.9, "spm_rate": 0.5, "streams": ["code.train"]},
        "streams": {"prose.train": 0.9, "code.train": 0.1},
        "streams_end": {"prose.train": 0.1, "code.train": 0.9},
        "steps": 6,
        "checkpoint_every": 3,
        "threads": 1,
        "seed": 1,
        "data_seed": 2,
    }
    reference = run_spec(prepared, tmp_path, out=str(tmp_path / "reference"), **settings)
    seen = Seen()
    train(reference, progress=False, callbacks=[seen])
    assert seen.sentinels > 0
    stopped = run_spec(prepared, tmp_path, out=str(tmp_path / "stopped"), **settings)
    with pytest.raises(Interrupt):
        train(stopped, progress=False, callbacks=[StopAt(5)])
    summary = train(stopped, progress=False)
    assert summary["resumed"] is True
    a, b = (
        load_file(str(tmp_path / "reference" / "model" / "model.safetensors")),
        load_file(str(tmp_path / "stopped" / "model" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_a_prepared_directory_from_before_the_sentinels_is_rebuilt(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tokenizer trained without the FIM sentinels (and the shards packed with it) is not reused."""
    import json
    import shutil

    from midtrain.data import prepare, tokenizer
    from midtrain.data.packing import read_manifest
    from tests.conftest import SMALL

    shutil.copytree(prepared / "corpora", tmp_path / "corpora")  # the corpora are the same: only the tokenizer changed
    corpora = json.loads((tmp_path / "corpora" / "manifest.json").read_text())
    options = prepare.PrepareOptions(out=tmp_path, vocab_size=320, sizes=SMALL, progress=False)

    def build() -> dict[str, str]:
        directory = prepare.prepare_tokenizer(options, corpora)
        manifest = prepare.prepare_shards(options, corpora, directory, splits=("heldout",))
        return {name: entry["sha256"]["bin"] for name, entry in manifest["streams"].items()}

    old = [tokenizer.EOS, tokenizer.PAD]
    monkeypatch.setattr(prepare, "SPECIAL_TOKENS", old)
    monkeypatch.setattr(tokenizer, "SPECIAL_TOKENS", old)
    before = build()  # a directory prepared before the sentinels existed
    assert load_tokenizer(tmp_path / "tokenizer").token_id(FIM_PREFIX) is None
    monkeypatch.undo()
    after = build()
    assert load_tokenizer(tmp_path / "tokenizer").token_id(FIM_PREFIX) == 2
    assert before.keys() == after.keys() and all(before[name] != after[name] for name in before)
    assert read_manifest(tmp_path / "shards")["tokenizer"]["vocab_size"] == 320
