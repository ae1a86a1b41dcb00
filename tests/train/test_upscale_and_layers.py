"""Depth up-scaling, per-layer attention kinds (sliding windows, NoPE) and NTK-alpha RoPE, on tiny models."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from midtrain.errors import MidtrainError
from midtrain.schema.base import FAMILY_ARCHITECTURES, Family
from midtrain.train.config import NewModel, RunSpec
from midtrain.train.loop import train

from .conftest import DIMS, make_spec, weights

TINY = {**DIMS, "hidden_size": 32, "intermediate_size": 64}


def tiny(layers: int = 2, **fields: Any) -> NewModel:
    dims = {**TINY, "num_hidden_layers": layers}
    return NewModel.model_validate(
        {"family": "llama", "dims": dims, "vocab_size": 64, "max_position_embeddings": 64, **fields}
    )


def saved_model(stand_in: str, directory: Path, **fields: Any) -> Path:
    """A 2-layer model of a stand-in architecture, saved as a transformers folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from midtrain.train.model import stand_in_config

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(stand_in_config(stand_in, tiny(**fields))).save_pretrained(directory)
    return directory


def upscale_spec(tmp_path: Path, init: Path, ranges: list) -> RunSpec:
    """A run specification for building its model only (no data or tokenizer is read)."""
    return RunSpec.model_validate(make_spec(tmp_path, tmp_path / "out", init={"path": str(init)}, upscale=ranges))


# ---- depth up-scaling ----


@pytest.mark.parametrize(
    ("stand_in", "fields", "ranges"),
    [
        ("llama", {}, [[0, 2], [0, 2]]),
        ("qwen3", {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 4}, [[1, 2], [0, 2]]),
        ("olmo3", {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 4}, [[1, 2], [0, 2]]),
        ("smollm3", {"no_rope_layers": [0, 1]}, [[1, 2], [0, 2]]),
    ],
)
def test_upscale_copies_the_source_layers_and_their_kinds(
    tmp_path: Path, stand_in: str, fields: dict, ranges: list
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from midtrain.train.model import count_parameters, load_model, model_config

    source = saved_model(stand_in, tmp_path / "source", **fields)
    spec = upscale_spec(tmp_path, source, ranges)
    picked = [index for start, end in ranges for index in range(start, end)]
    model = load_model(spec)
    original = AutoModelForCausalLM.from_pretrained(source)
    assert model.config.num_hidden_layers == len(picked) == len(model.model.layers)
    config = model_config(spec)
    assert config.num_hidden_layers == len(picked)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    for name in ("layer_types", "no_rope_layers"):
        if getattr(original.config, name, None) is not None:
            expected = [getattr(original.config, name)[i] for i in picked]
            assert getattr(model.config, name) == getattr(config, name) == expected, name
    state, source_state = model.state_dict(), original.state_dict()
    for key, value in state.items():
        if key.startswith("model.layers."):
            index = int(key.split(".")[2])
            source_key = key.replace(f"model.layers.{index}.", f"model.layers.{picked[index]}.", 1)
            assert torch.equal(value, source_state[source_key]), key
        else:
            assert torch.equal(value, source_state[key]), key
    # deep copies: a repeated layer does not share its tensors with the other copy
    assert (
        state["model.layers.0.mlp.up_proj.weight"].data_ptr() != state["model.layers.2.mlp.up_proj.weight"].data_ptr()
    )
    for index, layer in enumerate(model.model.layers):
        attention, source_attention = layer.self_attn, original.model.layers[picked[index]].self_attn
        assert attention.layer_idx == index and attention.config is model.config
        for attribute in ("sliding_window", "use_rope"):
            assert getattr(attention, attribute, None) == getattr(source_attention, attribute, None)
    # saved and reloaded with from_pretrained, it is the same network (a window shorter than the input)
    model.save_pretrained(tmp_path / "grown")
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path / "grown", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model.eval()(input_ids=ids).logits, reloaded.eval()(input_ids=ids).logits, atol=1e-5)


def test_upscale_range_beyond_the_init_model(tmp_path: Path) -> None:
    from midtrain.train.model import load_model, model_config

    source = saved_model("llama", tmp_path / "source")
    spec = upscale_spec(tmp_path, source, [[0, 2], [1, 3]])
    for build in (model_config, load_model):
        with pytest.raises(MidtrainError, match=r"\[1, 3\) exceeds the init model's 2 decoder layers") as info:
            build(spec)
        assert info.value.problems[0].path == "upscale"
    with pytest.raises(ValueError, match="init must be a model path"):
        RunSpec.model_validate(make_spec(tmp_path, tmp_path / "x", upscale=[[0, 2]]))


def test_upscale_refuses_a_layer_pattern_it_cannot_carry(tmp_path: Path) -> None:
    """Qwen3-MoE names its dense layers by index (mlp_only_layers): a copied layer would not reload as it is."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    from midtrain.train.model import load_model

    for name, dense in (("moe", []), ("mixed", [0])):
        config = Qwen3MoeConfig(
            **{**TINY, "num_hidden_layers": 2},
            vocab_size=64,
            num_experts=2,
            num_experts_per_tok=1,
            moe_intermediate_size=16,
            mlp_only_layers=dense,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / name)
    assert len(load_model(upscale_spec(tmp_path, tmp_path / "moe", [[0, 2], [1, 2]])).model.layers) == 3
    with pytest.raises(MidtrainError, match="cannot up-scale this qwen3_moe model") as info:
        load_model(upscale_spec(tmp_path, tmp_path / "mixed", [[0, 2], [0, 2]]))  # layer 2: a dense copy
    assert "model.layers.2.mlp" in info.value.render()


def test_training_with_upscale_saves_a_deeper_model_and_resumes(spec_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoConfig, AutoModelForCausalLM

    base = spec_factory("base", steps=2)
    train(RunSpec.load(base), progress=False)
    source = tmp_path / "base" / "model"
    grown = spec_factory("grown", steps=4, checkpoint_every=2, init={"path": str(source)}, upscale=[[0, 2], [0, 2]])
    summary = train(RunSpec.load(grown), progress=False)
    out = tmp_path / "grown"
    model, info = AutoModelForCausalLM.from_pretrained(out / "model", output_loading_info=True)
    assert AutoConfig.from_pretrained(out / "model").num_hidden_layers == 4 == len(model.model.layers)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    final = weights(out / "model")
    # resume from the step-2 checkpoint: the run builds the up-scaled model and loads the checkpoint into it
    shutil.rmtree(out / "checkpoints" / "step-0000004")
    shutil.rmtree(out / "model")
    again = train(RunSpec.load(grown), progress=False)
    assert again["resumed"] is True and again["steps"] == 4
    resumed = weights(out / "model")
    assert final.keys() == resumed.keys()
    assert all(bool((final[key] == resumed[key]).all()) for key in final)


# ---- sliding-window and NoPE layers ----


def _forward_last(model: Any, ids: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1]


@pytest.mark.parametrize("stand_in", ["qwen2", "qwen3", "olmo3", "smollm3"])
def test_sliding_window_layers_mask_beyond_the_window(stand_in: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from midtrain.train.model import stand_in_config

    window, length = 4, 12
    ids = torch.randint(0, 64, (1, length), generator=torch.Generator().manual_seed(0))
    outside, inside = ids.clone(), ids.clone()
    outside[0, length - 1 - window] = (outside[0, length - 1 - window] + 1) % 64  # just out of reach of the last
    inside[0, length - window] = (inside[0, length - window] + 1) % 64  # the oldest token it still sees
    changes = {}
    for kind in ("sliding_attention", "full_attention"):
        config = stand_in_config(stand_in, tiny(1, layer_types=[kind], sliding_window=window))
        assert config.layer_types == [kind]
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
        last = _forward_last(model, ids)
        changes[kind] = [float((_forward_last(model, x) - last).abs().max()) for x in (outside, inside)]
    assert changes["sliding_attention"][0] < 1e-6 < changes["sliding_attention"][1], changes
    assert changes["full_attention"][0] > 1e-4, changes


def test_nope_layers_skip_rope() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from midtrain.train.model import stand_in_config

    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    swapped = ids.clone()
    swapped[0, [2, 5]] = ids[0, [5, 2]]
    assert ids[0, 2] != ids[0, 5]
    changes = {}
    for flags in ([0], [1]):
        config = stand_in_config("smollm3", tiny(1, no_rope_layers=flags))
        assert config.no_rope_layers == flags and config.layer_types == ["full_attention"]
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
        assert bool(model.model.layers[0].self_attn.use_rope) == bool(flags[0])
        with torch.no_grad():  # sharper attention, so that positions matter visibly
            for projection in (model.model.layers[0].self_attn.q_proj, model.model.layers[0].self_attn.k_proj):
                projection.weight.mul_(20)
        changes[flags[0]] = float((_forward_last(model, swapped) - _forward_last(model, ids)).abs().max())
    # without positions, causal attention cannot tell the order of the earlier tokens
    assert changes[0] < 1e-5 < 1e-3 < changes[1], changes


def test_stand_in_defaults_are_plain_layers() -> None:
    """OLMo 3's config defaults to 3 sliding layers in 4 and SmolLM3's to NoPE every 4th layer: not here."""
    from midtrain.train.model import stand_in_config

    olmo3 = stand_in_config("olmo3", tiny(4))
    assert olmo3.layer_types == ["full_attention"] * 4
    smollm3 = stand_in_config("smollm3", tiny(4))
    assert smollm3.no_rope_layers == [1] * 4 and smollm3.layer_types == ["full_attention"] * 4
    assert not smollm3.use_sliding_window


@pytest.mark.parametrize(
    ("fields", "field", "what"),
    [
        ({"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 8}, "layer_types", "sliding"),
        ({"no_rope_layers": [0, 1]}, "no_rope_layers", "NoPE"),
    ],
)
def test_layer_kinds_a_stand_in_cannot_build(fields: dict, field: str, what: str) -> None:
    from midtrain.train.model import new_config, stand_in_config

    assert FAMILY_ARCHITECTURES[Family.llama][1] == "llama"
    with pytest.raises(MidtrainError, match=f"{what}.*family 'llama'.*'llama'") as info:
        new_config(tiny(**fields))
    assert info.value.problems[0].path == f"init.{field}"
    if field == "no_rope_layers":
        with pytest.raises(MidtrainError, match="NoPE"):
            stand_in_config("qwen3", tiny(**fields))
    # all-full / all-RoPE lists ask for nothing a plain stand-in lacks
    stand_in_config("llama", tiny(layer_types=["full_attention"] * 2, no_rope_layers=[1, 1]))


@pytest.mark.parametrize(
    ("family", "stand_in", "fields"),
    [
        ("olmo3", "olmo3", {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 16}),
        (
            "smollm3",
            "smollm3",
            {"layer_types": ["full_attention", "sliding_attention"], "sliding_window": 16, "no_rope_layers": [0, 1]},
        ),
    ],
)
def test_layer_kinds_train_and_reload(spec_factory, monkeypatch, family: str, stand_in: str, fields: dict) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoConfig, AutoModelForCausalLM

    monkeypatch.setitem(FAMILY_ARCHITECTURES, Family(family), (FAMILY_ARCHITECTURES[Family(family)][0], stand_in))
    init = {"family": family, "dims": DIMS, "vocab_size": 512, "max_position_embeddings": 64, **fields}
    rope = {"theta": 40_000.0, "scaling": {"type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64}}
    path = spec_factory(family, init=init, steps=2, rope=rope, max_position_embeddings=128)
    summary = train(RunSpec.load(path), progress=False)
    assert math.isfinite(summary["final_loss"])
    saved = Path(json.loads(path.read_text())["out"]) / "model"
    config = AutoConfig.from_pretrained(saved)
    assert config.model_type == stand_in and config.layer_types == fields["layer_types"]
    assert config.sliding_window == 16
    if "no_rope_layers" in fields:
        assert config.no_rope_layers == fields["no_rope_layers"]
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert model.model.layers[fields["layer_types"].index("sliding_attention")].self_attn.sliding_window == 16
    if stand_in == "olmo3":  # RoPE per layer type: the stage's settings on the full-attention layers only
        assert config.rope_parameters["full_attention"]["rope_type"] == "yarn"
        assert config.rope_parameters["full_attention"]["rope_theta"] == 40_000.0
        assert config.rope_parameters["sliding_attention"] == {"rope_type": "default", "rope_theta": 10_000.0}
    else:
        assert config.rope_parameters["rope_type"] == "yarn" and config.rope_parameters["rope_theta"] == 40_000.0


# ---- NTK-alpha ----


@pytest.mark.parametrize("theta", [None, 500_000.0])
def test_ntk_alpha_run_saves_the_scaled_base(spec_factory, theta: float | None) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoConfig

    rope: dict[str, Any] = {"scaling": {"type": "ntk-alpha", "alpha": 4.0}}
    if theta is not None:
        rope["theta"] = theta
    path = spec_factory("ntk", steps=1, rope=rope)
    train(RunSpec.load(path), progress=False)
    config = AutoConfig.from_pretrained(Path(json.loads(path.read_text())["out"]) / "model")
    head_dim = DIMS["hidden_size"] // DIMS["num_attention_heads"]  # 16
    expected = (theta or 10_000.0) * 4.0 ** (head_dim / (head_dim - 2))
    assert config.rope_parameters["rope_type"] == "default"
    assert config.rope_parameters["rope_theta"] == pytest.approx(expected, rel=1e-12)
