"""Evaluation of the base and the final model of a reproduction.

- held-out loss (and perplexity) per domain: prose, code, math, QA;
- math final-answer exact match by greedy generation on held-out problems;
- loss by token position on long documents: within the base's context vs beyond it;
- retrieval accuracy of planted facts at several lengths;
- an adapter for lm-evaluation-harness (optional; for real benchmarks at larger scales).

Writes `metrics/eval.json`:
{"loss": {"math": {"base": ..., "final": ...}, ...}, "position_loss": {"in_context": {...}, "beyond": {...}},
 "retrieval": {"<length>": {"base": ..., "final": ...}}, "math_exact_match": {...}, "perplexity": {...}}
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np

from midtrain.errors import MidtrainError


def _load(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    if not (model_dir / "config.json").exists():
        raise MidtrainError.single("model to evaluate not found (has its stage run?)", file=model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model


def heldout_loss(model: Any, tokens: np.ndarray, sequence_length: int, sequences: int, batch: int = 8) -> float:
    """Mean next-token loss over the first `sequences` consecutive windows of a held-out stream."""
    import torch

    count = min(sequences, (len(tokens) - 1) // sequence_length)
    if count < 1:
        raise MidtrainError.single(f"held-out stream has {len(tokens)} tokens, fewer than one window of {sequence_length + 1}")
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, count, batch):
            rows = [tokens[i * sequence_length : i * sequence_length + sequence_length + 1] for i in range(start, min(start + batch, count))]
            window = torch.from_numpy(np.stack(rows).astype(np.int64))
            logits = model(input_ids=window[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            n += window[:, 1:].numel()
    return total / n


def position_losses(model: Any, tokens: np.ndarray, doc_starts: np.ndarray, length: int, documents: int, batch: int = 4) -> np.ndarray:
    """Mean loss at each position 0..length-2 over windows that start at document starts."""
    import torch

    starts = [int(s) for s in doc_starts if s + length <= len(tokens)][:documents]
    if not starts:
        raise MidtrainError.single(f"no held-out long document has {length} tokens")
    sums = np.zeros(length - 1)
    with torch.no_grad():
        for i in range(0, len(starts), batch):
            window = torch.from_numpy(np.stack([tokens[s : s + length] for s in starts[i : i + batch]]).astype(np.int64))
            logits = model(input_ids=window[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), window[:, 1:], reduction="none")
            sums += loss.sum(0).numpy()
    return sums / len(starts)


def _generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch: int = 16) -> list[str]:
    """Greedy continuations (left-padded batches)."""
    import torch

    outputs: list[str] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[i : i + batch]]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
            generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            outputs.extend(tokenizer.decode(g[width:], skip_special_tokens=True) for g in generated)
    return outputs


def math_exact_match(model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_new_tokens: int) -> float:
    """Share of held-out problems whose generated solution ends with the right 'Answer: N'."""
    completions = _generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens)
    correct = 0
    for row, text in zip(rows, completions):
        match = re.search(r"Answer:\s*(-?\d+)", text)
        correct += bool(match and int(match.group(1)) == row["answer"])
    return correct / len(rows)


def retrieval_prompts(tokenizer: Any, length: int, documents: int, seed: int = 0) -> list[tuple[str, int]]:
    """Prompts of about `length` tokens: digit-free filler with one planted fact, then its question."""
    from midtrain.data.builtin import FACT_MARKER, filler_sentences

    rng = random.Random(f"retrieval:{seed}:{length}")
    sentences = filler_sentences()
    keys = ["amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper"]
    out = []
    for _ in range(documents):
        key, value = rng.choice(keys), rng.randint(10, 999)
        fact = f"The code of the {key} {FACT_MARKER} is {value}."
        question = f"\nQuestion: what is the code of the {key} {FACT_MARKER}? Answer:"
        budget = length - len(tokenizer(fact + question, add_special_tokens=False)["input_ids"]) - 2
        body: list[str] = []
        used = 0
        while True:
            sentence = rng.choice(sentences)
            cost = len(tokenizer(" " + sentence, add_special_tokens=False)["input_ids"])
            if used + cost > budget:
                break
            body.append(sentence)
            used += cost
        body.insert(rng.randint(0, len(body)), fact)
        out.append((" ".join(body) + question, value))
    return out


def retrieval_accuracy(model: Any, tokenizer: Any, prompts: list[tuple[str, int]]) -> float:
    completions = _generate(model, tokenizer, [p for p, _ in prompts], max_new_tokens=4, batch=8)
    hits = 0
    for (_, value), text in zip(prompts, completions):
        match = re.search(r"\d+", text)
        hits += bool(match and int(match.group(0)) == value)
    return hits / len(prompts)


def evaluate(config: dict[str, Any], root: Path = Path("."), progress: bool = True) -> dict[str, Any]:
    """Run every evaluation on the base and the final model; returns the metrics dictionary."""
    import torch
    from transformers import AutoTokenizer

    from midtrain.data.packing import open_shard, read_manifest
    from midtrain.progress import progress_bar

    torch.manual_seed(0)
    data = root / config["data"]
    shard_dir = data / "shards"
    manifest = read_manifest(shard_dir)
    shards = {name: open_shard(shard_dir, entry) for name, entry in manifest["streams"].items() if name.endswith(".heldout")}
    models = {"base": root / config["base"], "final": root / config["final"]}
    tokenizer = AutoTokenizer.from_pretrained(models["final"])
    math_rows = [json.loads(line) for line in open(data / "corpora" / "math.heldout.jsonl", encoding="utf-8")]
    math_rows = math_rows[: config["math_exact_match"]["problems"]]
    position = config["position"]
    results: dict[str, Any] = {"loss": {}, "perplexity": {}, "position_loss": {"in_context": {}, "beyond": {}},
                               "retrieval": {}, "math_exact_match": {}, "position_curve": {}}
    retrieval_sets = {length: retrieval_prompts(tokenizer, length, config["retrieval"]["documents"]) for length in config["retrieval"]["lengths"]}
    steps = len(models) * (len(config["domains"]) + 3)
    with progress_bar("evaluate", steps, enabled=progress) as advance:
        for which, path in models.items():
            model = _load(path)
            for domain, stream in config["domains"].items():
                loss = heldout_loss(model, np.asarray(shards[stream].tokens), config["sequence_length"], config["sequences"])
                results["loss"].setdefault(domain, {})[which] = loss
                results["perplexity"].setdefault(domain, {})[which] = math.exp(loss)
                advance(1)
            long = shards[position["stream"]]
            curve = position_losses(model, np.asarray(long.tokens), long.doc_starts, position["length"], config["sequences"])
            cut = position["base_context"]
            results["position_loss"]["in_context"][which] = float(curve[: cut - 1].mean())
            results["position_loss"]["beyond"][which] = float(curve[cut - 1 :].mean()) if len(curve) >= cut else None
            results["position_curve"][which] = [round(float(v), 5) for v in curve]
            advance(1)
            results["math_exact_match"][which] = math_exact_match(model, tokenizer, math_rows, config["math_exact_match"]["max_new_tokens"])
            advance(1)
            for length, prompts in retrieval_sets.items():
                results["retrieval"].setdefault(str(length), {})[which] = retrieval_accuracy(model, tokenizer, prompts)
            advance(1)
            del model
    results["relative_change"] = {d: v["final"] / v["base"] - 1 for d, v in results["loss"].items()}
    beyond, inside = results["position_loss"]["beyond"], results["position_loss"]["in_context"]
    results["beyond_vs_in_context"] = {w: (beyond[w] / inside[w] - 1) if beyond.get(w) is not None else None for w in models}
    results["config"] = {k: v for k, v in config.items() if k in ("base", "final", "sequence_length", "sequences", "position", "retrieval")}
    return results


# ---------------------------------------------------------------- lm-evaluation-harness


def lm_eval_model(model_dir: Path, batch_size: int = 8) -> Any:
    """An lm-evaluation-harness `LM` backed by a saved midtrain / transformers model directory."""
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise MidtrainError.single("lm-evaluation-harness is not installed: `pip install 'midtrain[eval]'`") from None
    return HFLM(pretrained=str(model_dir), batch_size=batch_size, device="cuda" if _cuda() else "cpu")


def run_lm_eval(model_dir: Path, tasks: list[str], include_path: Path | None = None, limit: int | None = None) -> dict[str, Any]:
    """Evaluate on lm-eval tasks (hub tasks, or local YAML task files under `include_path`)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MidtrainError.single("lm-evaluation-harness is not installed: `pip install 'midtrain[eval]'`") from None
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    output = simple_evaluate(model=lm_eval_model(model_dir), tasks=tasks, task_manager=manager, limit=limit)
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float))} for task, metrics in output["results"].items()}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
