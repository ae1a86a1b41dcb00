"""Tokenizers: a byte-level BPE trained on the built-ins at tiny scale, the published one otherwise.

The trained one has the special tokens end-of-text, padding and the three fill-in-the-middle
sentinels (`<|fim_prefix|>`, `<|fim_middle|>`, `<|fim_suffix|>`, ids 0-4), so tiny runs can use FIM.

The trained tokenizer is saved as a normal Hugging Face tokenizer directory (tokenizer.json plus
tokenizer_config.json) so `transformers.AutoTokenizer.from_pretrained(dir)` loads it; writing it
does not need transformers at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from midtrain.errors import MidtrainError
from midtrain.io import atomic_dir

if TYPE_CHECKING:
    from tokenizers import Tokenizer

EOS = "<|endoftext|>"
PAD = "<|pad|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_TOKENS = [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]
SPECIAL_TOKENS = [EOS, PAD, *FIM_TOKENS]  # in id order; changing it changes every trained tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: Path, model_max_length: int = 1_000_000) -> Path:
    """Train a byte-level BPE and save it to `out_dir` atomically. Deterministic for the same texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise MidtrainError.single(
            "vocab_size must be at least 300 for byte-level BPE", expected=">= 300", found=str(vocab_size)
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    with atomic_dir(out_dir) as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": EOS,
            "bos_token": EOS,
            "pad_token": PAD,
            "unk_token": None,
            "additional_special_tokens": FIM_TOKENS,
            "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": False,
        }
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "special_tokens_map.json").write_text(
            json.dumps(
                {"eos_token": EOS, "bos_token": EOS, "pad_token": PAD, "additional_special_tokens": FIM_TOKENS},
                indent=2,
            )
            + "\n"
        )
    return out_dir


class FastTokenizer:
    """The bits of a tokenizer the data pipeline needs, on top of the `tokenizers` library (no transformers)."""

    def __init__(self, tokenizer: Tokenizer, eos_id: int, source: str):
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.source = source

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encode = getattr(self.tokenizer, "encode_batch_fast", None) or self.tokenizer.encode_batch
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def token_id(self, text: str) -> int | None:
        """The id of `text` as one token of the vocabulary (special or not), or None."""
        token = self.tokenizer.token_to_id(text)
        return None if token is None else int(token)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def load_tokenizer(path_or_id: str | Path, revision: str | None = None) -> FastTokenizer:
    """A directory with tokenizer.json, or a hub id (resolved through the local HF cache / hub)."""
    from tokenizers import Tokenizer

    path = Path(path_or_id)
    if path.is_dir():
        file = path / "tokenizer.json"
        if not file.exists():
            raise MidtrainError.single("no tokenizer.json in this directory", file=path)
        tokenizer = Tokenizer.from_file(str(file))
        eos_token = EOS
        config = path / "tokenizer_config.json"
        if config.exists():
            eos_token = json.loads(config.read_text()).get("eos_token") or EOS
            if isinstance(eos_token, dict):
                eos_token = eos_token.get("content", EOS)
    else:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(path_or_id), revision=revision, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise MidtrainError.single(f"cannot load tokenizer {path_or_id!r}: {exc}") from None
        tokenizer = hf.backend_tokenizer
        eos_token = hf.eos_token
    eos_id = tokenizer.token_to_id(eos_token) if eos_token else None
    if eos_id is None:
        raise MidtrainError.single(f"tokenizer {path_or_id} has no end-of-text token {eos_token!r}")
    return FastTokenizer(tokenizer, eos_id, str(path_or_id))


def sample_texts(paths: list[Path], chars_per_file: int) -> Iterator[str]:
    """The first `chars_per_file` characters of documents from each JSONL file (tokenizer training sample)."""
    for path in paths:
        budget = chars_per_file
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line)["text"]
                yield text
                budget -= len(text)
                if budget <= 0:
                    break
