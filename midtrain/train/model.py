"""Models: `transformers` causal LMs from a config or `from_pretrained`, RoPE per stage, HF-format saving."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from midtrain.errors import MidtrainError
from midtrain.schema.base import FAMILY_ARCHITECTURES
from midtrain.train.config import NewModel, Pretrained, RunSpec

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

CONFIG_CLASSES = {
    "llama": "LlamaConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "olmo2": "Olmo2Config",
    "olmo3": "Olmo3Config",
    "smollm3": "SmolLM3Config",
}
# What a stand-in's config can express beyond full-attention RoPE layers (NewModel.layer_types,
# sliding_window, no_rope_layers), and which stand-ins keep RoPE parameters per layer type.
SLIDING_WINDOW_STAND_INS = ("qwen2", "qwen3", "olmo3", "smollm3")
NO_ROPE_STAND_INS = ("smollm3",)
ROPE_PER_LAYER_TYPE = ("olmo3",)


def new_config(spec: NewModel) -> PretrainedConfig:
    """A `transformers` config of the family's tiny/small stand-in architecture."""
    return stand_in_config(FAMILY_ARCHITECTURES[spec.family][1], spec)


def stand_in_config(stand_in: str, spec: NewModel) -> PretrainedConfig:
    """A `transformers` config of the stand-in architecture `stand_in` (a key of CONFIG_CLASSES)."""
    import transformers

    check_layer_kinds(stand_in, spec)
    cls = getattr(transformers, CONFIG_CLASSES[stand_in])
    layers = spec.dims.num_hidden_layers
    rope = {"rope_type": "default", "rope_theta": spec.rope_theta}
    kwargs: dict[str, Any] = dict(
        vocab_size=spec.vocab_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        rope_parameters=rope,
        # a stand-in's special ids come from its own tokenizer when it is saved, never the published
        # model's (OLMo 2's EOS 100257 would lie outside a 2K vocabulary)
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        **spec.dims.model_dump(),
    )
    if stand_in == "qwen3":
        kwargs["head_dim"] = spec.dims.hidden_size // spec.dims.num_attention_heads
    if stand_in in SLIDING_WINDOW_STAND_INS:
        # always explicit: OLMo 3's default is 3 sliding layers in 4, SmolLM3's every 4th layer NoPE
        layer_types = list(spec.layer_types or ["full_attention"] * layers)
        sliding = "sliding_attention" in layer_types
        kwargs.update(layer_types=layer_types, sliding_window=spec.sliding_window if sliding else None)
        if stand_in == "olmo3":  # builds the sliding mask even with no sliding layer: any window will do
            kwargs["sliding_window"] = spec.sliding_window or spec.max_position_embeddings
        else:
            kwargs["use_sliding_window"] = sliding
    if stand_in in NO_ROPE_STAND_INS:
        kwargs["no_rope_layers"] = list(spec.no_rope_layers or [1] * layers)
    if stand_in in ROPE_PER_LAYER_TYPE:
        kwargs["rope_parameters"] = {kind: dict(rope) for kind in ("full_attention", "sliding_attention")}
    config = cls(**kwargs)
    config.use_cache = False
    return config


def check_layer_kinds(stand_in: str, spec: NewModel) -> None:
    """Refuse per-layer attention kinds the stand-in architecture cannot build (never drop them silently)."""
    if spec.layer_types and "sliding_attention" in spec.layer_types and stand_in not in SLIDING_WINDOW_STAND_INS:
        raise MidtrainError.single(
            f"init.layer_types has sliding-window layers, but the stand-in architecture of family "
            f"{spec.family.value!r} is {stand_in!r}, which has no sliding-window attention",
            path="init.layer_types",
            expected=f"a family whose stand-in is one of {', '.join(SLIDING_WINDOW_STAND_INS)}",
            found=stand_in,
        )
    if spec.no_rope_layers and 0 in spec.no_rope_layers and stand_in not in NO_ROPE_STAND_INS:
        raise MidtrainError.single(
            f"init.no_rope_layers has NoPE layers, but the stand-in architecture of family "
            f"{spec.family.value!r} is {stand_in!r}, which applies RoPE in every layer",
            path="init.no_rope_layers",
            expected=f"a family whose stand-in is one of {', '.join(NO_ROPE_STAND_INS)}",
            found=stand_in,
        )


def apply_rope(config: PretrainedConfig, spec: RunSpec) -> PretrainedConfig:
    """Set the stage's RoPE base / scaling and max positions on the config (persisted when saved).

    Where the config keeps RoPE parameters per layer type (OLMo 3: `{"full_attention": {...},
    "sliding_attention": {...}}`), the stage's settings go to the full-attention layers and the
    sliding-window layers keep theirs, as OLMo 3 and Gemma 3 extend context."""
    current = dict(getattr(config, "rope_parameters", None) or {})
    per_type = bool(current) and all(isinstance(value, dict) for value in current.values())
    if spec.rope is not None:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if per_type:
            kinds = ["full_attention"] if "full_attention" in current else list(current)
            fallback = getattr(config, "rope_theta", 10_000.0)
            config.rope_parameters = {
                **current,
                **{kind: _stage_rope(dict(current[kind]), spec, head_dim, fallback) for kind in kinds},
            }
        else:
            config.rope_parameters = _stage_rope(current, spec, head_dim, getattr(config, "rope_theta", 10_000.0))
    if spec.max_position_embeddings:
        config.max_position_embeddings = max(spec.max_position_embeddings, spec.sequence_length)
    elif config.max_position_embeddings < spec.sequence_length:
        config.max_position_embeddings = spec.sequence_length
    return config


def _stage_rope(current: dict[str, Any], spec: RunSpec, head_dim: int, fallback_theta: float) -> dict[str, Any]:
    """One set of `transformers` RoPE parameters after the stage's change to `current`."""
    assert spec.rope is not None
    theta = spec.rope.theta if spec.rope.theta is not None else current.get("rope_theta", fallback_theta)
    if spec.rope.scaling is None and current.get("rope_type", "default") != "default":
        return {**current, "rope_theta": theta}  # a base change keeps an earlier scaling
    return spec.rope.to_hf(theta, head_dim)


def model_config(spec: RunSpec) -> PretrainedConfig:
    """The config of the model a run trains, with the run's RoPE settings and depth up-scaling
    applied (nothing allocated)."""
    config = _init_config(spec)
    if spec.upscale is not None and isinstance(spec.init, Pretrained):
        from midtrain.train.upscale import upscaled_config

        config = upscaled_config(config, spec.upscale, spec.init.path)
    return config


def _init_config(spec: RunSpec) -> PretrainedConfig:
    """The config of the init model, with the run's RoPE settings applied (before any up-scaling)."""
    from transformers import AutoConfig

    init = spec.init
    if isinstance(init, NewModel):
        return apply_rope(new_config(init), spec)
    path = Path(init.path)
    if path.exists() and not (path / "config.json").exists():
        raise MidtrainError.single("not a model directory (no config.json)", file=path)
    if not path.exists() and (init.path.startswith((".", "/")) or init.path.count("/") != 1):
        raise MidtrainError.single("model directory not found", file=path)
    try:
        config = AutoConfig.from_pretrained(init.path, revision=init.revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise MidtrainError.single(f"cannot load the model config of {init.path!r}: {exc}") from None
    config = apply_rope(config, spec)
    config.use_cache = False
    return config


def supports_sdpa(config: PretrainedConfig) -> bool:
    """Whether the causal-LM class of `config` implements torch's scaled_dot_product_attention."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        return bool(getattr(MODEL_FOR_CAUSAL_LM_MAPPING[type(config)], "_supports_sdpa", False))
    except (KeyError, ImportError, AttributeError):
        return False


def count_parameters(config: PretrainedConfig) -> int:
    """Parameters of a config's model, counted on the meta device (no memory is allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def load_model(spec: RunSpec, init_override: Path | None = None) -> PreTrainedModel:
    """The model a run starts from, with the run's RoPE settings applied, in fp32 on the CPU, with
    the run's attention implementation (transformers' default while it is still `auto`).

    With `spec.upscale`, the init model's decoder layers are up-scaled (midtrain/train/upscale.py):
    this is the architecture a resumed run builds and then loads its checkpoint into."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    init = Pretrained(path=str(init_override)) if init_override else spec.init
    attention = {} if spec.attn_implementation == "auto" else {"attn_implementation": spec.attn_implementation}
    if isinstance(init, NewModel):
        config = apply_rope(new_config(init), spec)
        torch.manual_seed(spec.seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32, **attention)
    config = _init_config(spec.model_copy(update={"init": init}))
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            init.path, revision=init.revision, config=config, dtype=torch.float32, trust_remote_code=False, **attention
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise MidtrainError.single(f"cannot load model weights from {init.path!r}: {exc}") from None
    if spec.upscale is not None:
        from midtrain.train.upscale import upscale

        upscale(model, spec.upscale, init.path)
    return model


def check_vocab(model: PreTrainedModel, tokenizer_vocab: int, tokenizer_path: Path) -> None:
    # the embedding's weight, typed by torch as what Module.__getattr__ may return
    model_vocab = cast("torch.Tensor", model.get_input_embeddings().weight).shape[0]
    if tokenizer_vocab > model_vocab:
        raise MidtrainError.single(
            "tokenizer and model vocabularies do not match: token ids would index past the embedding table",
            file=tokenizer_path,
            expected=f"at most {model_vocab} tokens (the model's embedding rows)",
            found=f"{tokenizer_vocab} tokens",
        )


def unwrapped(model: torch.nn.Module) -> PreTrainedModel:
    """The model a DDP wrapper holds, or `model` itself (FSDP2 shards in place, it does not wrap)."""
    return cast("PreTrainedModel", getattr(model, "module", model))


def named_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of a model, through a DDP wrapper (FSDP2 shards in place)."""
    return unwrapped(model).named_parameters()


def unsharded_copy(spec: RunSpec, tensors: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A plain CPU model holding `tensors` (for saving averages or FSDP-gathered weights)."""
    model = load_model(spec)
    missing, unexpected = model.load_state_dict(dict(tensors), strict=False)
    tied = getattr(model.config, "tie_word_embeddings", False)
    if unexpected or [m for m in missing if not (tied and "lm_head" in m)]:
        raise RuntimeError(
            f"averaged weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model


def check_fits(config: PretrainedConfig, parameters: int, spec: RunSpec, device: torch.device, world: int = 1) -> None:
    """Refuse a resolved configuration that cannot fit, before allocating it (the estimate is
    train/auto.py's `memory_bytes`, the one `auto` sizes micro-batches with)."""
    import psutil
    import torch

    from midtrain.train.auto import Footprint, memory_bytes

    need = memory_bytes(
        Footprint.of(config, parameters),
        micro_batch=int(spec.micro_batch),
        sequence_length=spec.sequence_length,
        precision=spec.precision,
        checkpointing=bool(spec.activation_checkpointing),
        attention=spec.attn_implementation,
        shards=world if spec.strategy == "fsdp" else 1,
    )
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        where = f"GPU {device}"
    else:
        free = psutil.virtual_memory().available
        where = "RAM"
    if need > free:
        raise MidtrainError.single(
            f"this configuration needs about {need / 2**30:.1f} GiB but {where} has {free / 2**30:.1f} GiB free; "
            "lower micro_batch or sequence_length, enable activation_checkpointing, or use FSDP over more devices",
            expected=f"< {free / 2**30:.1f} GiB",
            found=f"≈ {need / 2**30:.1f} GiB",
        )


def save_pretrained(
    model: PreTrainedModel, tokenizer_dir: Path, out: Path, extra: dict[str, Any] | None = None
) -> Path:
    """Save in HF format (safetensors, config, generation config, tokenizer) atomically."""
    from transformers.utils import logging as hf_logging

    from midtrain.io import atomic_dir

    hf_logging.disable_progress_bar()

    with atomic_dir(out) as tmp:
        model.config.use_cache = True  # saved models generate with a KV cache; training keeps it off
        model.save_pretrained(tmp, safe_serialization=True)
        write_model_files(model.config, tokenizer_dir, tmp, extra)
        model.config.use_cache = False
    return out


def write_model_files(
    config: PretrainedConfig, tokenizer_dir: Path | None, tmp: Path, extra: dict[str, Any] | None = None
) -> None:
    """Everything of an HF model directory but its weights, into `tmp`: config.json (with a KV cache
    and the tokenizer's special-token ids), generation_config.json, the tokenizer's files and
    midtrain.json (`extra`). Shared by save_pretrained and `midtrain export` (midtrain/train/export.py)."""
    from transformers import GenerationConfig

    use_cache = config.use_cache
    config.use_cache = True
    generation = GenerationConfig.from_model_config(config)
    tokenizer_config = tokenizer_dir / "tokenizer_config.json" if tokenizer_dir is not None else None
    if tokenizer_dir is not None and tokenizer_config is not None and tokenizer_config.exists():
        info = json.loads(tokenizer_config.read_text())
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        eos = info.get("eos_token")
        pad = info.get("pad_token")
        generation.eos_token_id = tok.token_to_id(eos) if isinstance(eos, str) else generation.eos_token_id
        generation.pad_token_id = tok.token_to_id(pad) if isinstance(pad, str) else generation.eos_token_id
        bos = info.get("bos_token")
        generation.bos_token_id = tok.token_to_id(bos) if isinstance(bos, str) else generation.eos_token_id
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        value = getattr(generation, key, None)
        if value is not None:
            setattr(config, key, value)
    config.save_pretrained(tmp)
    config.use_cache = use_cache
    generation.save_pretrained(tmp)
    for item in tokenizer_dir.iterdir() if tokenizer_dir is not None else []:
        if item.is_file() and item.name != "midtrain.json":
            shutil.copy2(item, tmp / item.name)
    if extra:
        (tmp / "midtrain.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
