"""`precision: auto` resolves per machine, is printed and recorded, and keeps resume exact."""

from __future__ import annotations

import json

import pytest
import torch

from midtrain.train import precision

from .test_trainer import run


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (frozenset({"avx2", "fma"}), "fp32"),
        (frozenset({"avx512f", "avx512_bf16"}), "bf16"),
        (frozenset({"amx_bf16", "amx_tile"}), "bf16"),
        (frozenset(), "fp32"),
    ],
)
def test_cpu_auto_follows_native_bf16(monkeypatch, flags, expected) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    value, reason = precision.resolve_precision("auto", torch.device("cpu"))
    assert value == expected and reason
    assert precision.resolve_precision("bf16", torch.device("cpu"))[0] == "bf16"
    assert precision.resolve_precision("fp32", torch.device("cpu"))[0] == "fp32"


def test_this_machine_reads_its_flags() -> None:
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)


def test_auto_is_resolved_and_recorded(spec_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = spec_factory("auto", steps=6, precision="auto", checkpoint_every=3)
    summary = run(path)
    out = tmp_path / "auto"
    resolved = json.loads((out / "resolved.json").read_text())
    expected, _ = precision.resolve_precision("auto", torch.device("cpu"))
    assert resolved["precision"]["value"] == expected
    assert summary["steps"] == 6
