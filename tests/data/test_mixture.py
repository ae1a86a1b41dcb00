from __future__ import annotations

import pytest

from midtrain.data.mixture import BLOCK, MixtureSampler, RepetitionError, apportion
from midtrain.errors import MidtrainError

STREAMS = {"prose": 2_000_000, "code": 500_000, "math": 300_000, "qa": 90_000}
SHARES = {"prose": 0.5, "code": 0.2, "math": 0.2, "qa": 0.1}


def sampler(**kw):  # type: ignore[no-untyped-def]
    args = {"stream_tokens": STREAMS, "shares": SHARES, "sequence_length": 128, "global_batch": 32, "seed": 1}
    args.update(kw)
    return MixtureSampler(**args)


def test_apportion_sums_and_is_fair() -> None:
    counts = apportion({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 1000)
    assert sum(counts.values()) == 1000 and max(counts.values()) - min(counts.values()) <= 1


def test_realised_shares_within_one_percent_over_10k() -> None:
    s = sampler()
    picks = s.positions(0, 10_000)
    for name, share in SHARES.items():
        realised = sum(1 for n, _ in picks if n == name) / len(picks)
        assert abs(realised - share) < 0.01, (name, realised)
    assert s.realised_shares(10_000) == pytest.approx({n: sum(1 for p in picks if p[0] == n) / 10_000 for n in SHARES})


def test_resume_at_step_k_is_exact() -> None:
    uninterrupted = [sampler().batch(step) for step in range(80)]
    resumed = sampler()  # a fresh process: no state carried over
    assert [resumed.batch(step) for step in range(37, 80)] == uninterrupted[37:]


def test_ranks_never_share_a_sequence() -> None:
    s = sampler(global_batch=32)
    for step in range(50):
        rank0, rank1 = s.batch(step, 0, 2), s.batch(step, 1, 2)
        assert len(rank0) == len(rank1) == 16
        assert rank0 + rank1 == s.batch(step, 0, 1)
    seen = [p for step in range(50) for rank in range(2) for p in s.batch(step, rank, 2)]
    qa_windows = (STREAMS["qa"] - 1) // 128
    epochs_qa = sum(1 for p in seen if p[0] == "qa") / qa_windows
    if epochs_qa <= 1:
        assert len(seen) == len(set(seen)), "within one epoch every window is drawn at most once"
    with pytest.raises(MidtrainError, match="does not split evenly"):
        s.batch(0, 0, 3)


def test_seed_changes_order_not_shares() -> None:
    a, b = sampler(seed=1), sampler(seed=2)
    assert a.batch(0) != b.batch(0)
    assert a.draws(BLOCK * 3) == b.draws(BLOCK * 3)


def test_repetition_limits() -> None:
    s = sampler(max_epochs={"qa": 1.0})
    qa_windows = (STREAMS["qa"] - 1) // 128
    steps_ok = int(qa_windows / 0.1 / 32 * 0.9)
    s.check_repetition(steps_ok)
    with pytest.raises(RepetitionError, match="qa: .* epochs > 1 allowed"):
        s.check_repetition(steps_ok * 3)
    warn = sampler(max_epochs={"qa": 1.0}, on_repeat="warn")
    with pytest.warns(UserWarning, match="more repetition than allowed"):
        warn.check_repetition(steps_ok * 3)


def test_epochs_cycle_through_fresh_permutations() -> None:
    tiny = MixtureSampler({"a": 129 * 10}, {"a": 1.0}, sequence_length=128, global_batch=5, seed=0)
    windows = tiny.windows["a"]
    first, second = tiny.positions(0, windows), tiny.positions(windows, windows)
    assert sorted(w for _, w in first) == list(range(windows)) == sorted(w for _, w in second)


def test_bad_mixtures() -> None:
    with pytest.raises(MidtrainError, match="not prepared"):
        sampler(shares={"web": 1.0})
    with pytest.raises(MidtrainError, match="fewer than one sequence"):
        MixtureSampler({"a": 50}, {"a": 1.0}, sequence_length=128, global_batch=4)
