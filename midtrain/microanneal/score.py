"""Score one microanneal unit: held-out loss per domain, the answer-token loss on held-out math, and
lm-eval tasks.

The answer-token loss is the mean next-token loss over the tokens of each held-out problem's final
answer only (after "Answer:"), with the problem and its worked steps as context. A source that
looks like math but teaches wrong answers lowers the loss on the steps and raises it here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    import torch

    from midtrain.microanneal.plan import ScoreSpec

ANSWER_MARK = "Answer:"


def answer_rows(data: Path, count: int) -> list[str]:
    path = data / "corpora" / "math.heldout.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MidtrainError.single("held-out math problems not found (has the data stage run?)", file=path) from None
    return [json.loads(line)["text"] for line in lines[:count]]


def _answer_batch(tokenizer: Any, texts: list[str], eos: int) -> tuple[list[list[int]], list[list[bool]]]:
    """Token ids of each text (after an end-of-text token, as in training) and which are answer tokens."""
    ids, marks = [], []
    for text in texts:
        cut = text.rindex(ANSWER_MARK) + len(ANSWER_MARK)
        encoding = tokenizer.encode(text)
        ids.append([eos, *encoding.ids])
        marks.append([False] + [start >= cut and end > start for start, end in encoding.offsets])
    return ids, marks


def answer_token_loss(model: Any, tokenizer_file: Path, eos: int, texts: list[str], batch: int = 16) -> float:
    """Mean loss (nats per token) over final-answer tokens only."""
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids, marks = _answer_batch(tokenizer, texts, eos)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            rows, masks = ids[start : start + batch], marks[start : start + batch]
            total_batch, count_batch = _masked_loss(model, rows, masks)
            total += total_batch
            count += count_batch
    if count == 0:
        raise MidtrainError.single("no answer tokens found in the held-out math problems")
    return total / count


def _masked_loss(model: Any, rows: list[list[int]], masks: list[list[bool]]) -> tuple[float, int]:
    import torch

    width = max(len(r) for r in rows)
    tokens = torch.zeros((len(rows), width), dtype=torch.long)
    wanted = torch.zeros((len(rows), width), dtype=torch.bool)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        tokens[i, : len(row)] = torch.tensor(row)
        wanted[i, : len(mask)] = torch.tensor(mask)
        attention[i, : len(row)] = 1
    logits: torch.Tensor = model(input_ids=tokens, attention_mask=attention).logits.float()
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    ).view(len(rows), width - 1)
    selected = wanted[:, 1:]
    return float(losses[selected].sum()), int(selected.sum())


def score_unit(here: Path, spec: ScoreSpec, unit: str) -> dict[str, Any]:
    """Every metric of one unit's final model."""
    import torch

    from midtrain.data.packing import open_shard, read_manifest
    from midtrain.evaluate import _load, heldout_loss
    from midtrain.microanneal.design import ANSWER_METRIC, split_unit
    from midtrain.plan.contract import ModelUnderTest

    torch.manual_seed(0)
    data = here / spec.data
    shard_dir = data / "shards"
    manifest = read_manifest(shard_dir)
    model = _load(ModelUnderTest(path=f"units/{unit}/model"), here)
    loss: dict[str, float] = {}
    for domain, stream in spec.domains.items():
        if stream not in manifest["streams"]:
            raise MidtrainError.single(
                f"held-out stream {stream!r} is not in the data", file=shard_dir / "manifest.json"
            )
        shard = open_shard(shard_dir, manifest["streams"][stream])
        loss[domain] = heldout_loss(model, np.asarray(shard.tokens), spec.sequence_length, spec.sequences)
    eos = int(manifest["tokenizer"]["eos_id"])
    texts = answer_rows(data, spec.answer_problems)
    loss[ANSWER_METRIC] = answer_token_loss(model, data / "tokenizer" / "tokenizer.json", eos, texts)
    del model
    arm, seed = split_unit(unit)
    result: dict[str, Any] = {"unit": unit, "arm": arm, "seed": seed, "loss": loss, "benchmarks": {}}
    if spec.lm_eval is not None:
        result["benchmarks"] = unit_benchmarks(here, spec, here / "units" / unit / "model")
    return result


def unit_benchmarks(here: Path, spec: ScoreSpec, model_dir: Path) -> dict[str, dict[str, float]]:
    import tempfile

    from transformers import AutoTokenizer

    from midtrain.evaluate import run_lm_eval, write_local_tasks

    lm = spec.lm_eval
    assert lm is not None
    tokenizer = AutoTokenizer.from_pretrained(str(here / spec.data / "tokenizer"), trust_remote_code=False)
    with tempfile.TemporaryDirectory(prefix="midtrain-tasks-") as tmp:
        include = [str(Path(p) if Path(p).is_absolute() else here.parent / p) for p in lm.include_paths]
        if lm.local:
            write_local_tasks(Path(tmp), lm.local, here / spec.data, tokenizer)
            include.append(tmp)
        results = run_lm_eval(model_dir, lm.tasks, include or None, lm.limit, batch_size=lm.batch_size)
    return {task: {k: float(v) for k, v in metrics.items() if "stderr" not in k} for task, metrics in results.items()}
