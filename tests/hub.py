"""A Hugging Face hub cache written by the tests themselves: a small random model and its tokenizer
under a hub id, in the standard layout (blobs by sha256, snapshots/<commit>/ symlinks, refs/main).
With HF_HUB_CACHE pointing there and HF_HUB_OFFLINE=1, `from_pretrained("org/name")` resolves
exactly as after a download."""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

from midtrain.data import builtin


def _texts() -> list[str]:
    texts = [p.text() for p in builtin.math_problems(0, 600, "tokenizer")]
    texts += [text for _, text in itertools.islice(builtin.prose_documents(), 150)]
    texts += [text for _, text in itertools.islice(builtin.code_documents(), 40)]
    texts += builtin.filler_sentences(2000)
    return texts


def save_random_model(
    out: Path,
    *,
    model_type: str = "llama",
    context: int = 64,
    theta: float = 10_000.0,
    vocab: int = 512,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """A random causal LM of `model_type` with its own byte-level BPE tokenizer, saved in HF format."""
    import json

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from midtrain.data.tokenizer import train_bpe

    with tempfile.TemporaryDirectory() as tmp:
        train_bpe(_texts(), vocab, Path(tmp) / "tok")
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(Path(tmp) / "tok" / "tokenizer.json"),
            eos_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            pad_token="<|pad|>",
        )
    config_class = {
        "llama": transformers.LlamaConfig,
        "qwen3": transformers.Qwen3Config,
        "gpt2": transformers.GPT2Config,
    }[model_type]
    kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if model_type == "gpt2":
        kwargs.update(n_embd=64, n_layer=2, n_head=4, n_positions=context)
    else:
        kwargs.update(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            max_position_embeddings=context,
            rope_parameters={"rope_type": "default", "rope_theta": theta},
        )
        if model_type == "qwen3":
            kwargs["head_dim"] = 16
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config_class(**kwargs))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if extra_config:
        config = json.loads((out / "config.json").read_text())
        config.update(extra_config)
        (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def install_in_cache(model_dir: Path, cache: Path, repo_id: str, commit: str | None = None) -> str:
    """Lay `model_dir`'s files out as `huggingface_hub` stores a download; returns the commit."""
    commit = commit or hashlib.sha1(f"{repo_id}:{sorted(p.name for p in model_dir.iterdir())}".encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(model_dir.iterdir()):
        if not file.is_file():
            continue
        data = file.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        link = snapshot / file.name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(Path("..") / ".." / "blobs" / digest, link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit
