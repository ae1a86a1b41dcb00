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
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from midtrain.errors import MidtrainError

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

    from midtrain.plan.contract import BenchmarkEval, ModelUnderTest, StandInEval


def _heldout_math(data: Path) -> list[str]:
    """The held-out math problems of the built-in corpora, one JSON line each."""
    return (data / "corpora" / "math.heldout.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


def _load(model: ModelUnderTest, root: Path) -> PreTrainedModel:
    """A model under test: a directory produced here, a local base directory, or a hub id@commit.
    Code from a model folder is never run."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    local = root / model.path
    if local.exists() and not (local / "config.json").exists():
        raise MidtrainError.single("model to evaluate not found (has its stage run?)", file=local)
    source = str(local) if local.exists() else model.path
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            source, revision=None if local.exists() else model.revision, dtype=torch.float32, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise MidtrainError.single(f"cannot load the model to evaluate ({model.path}): {exc}") from None
    loaded.eval()
    return loaded


EVAL_TOKENS = 8192  # tokens per forward pass of the loss evaluations: few passes for small models, bounded memory


def _batch_for(length: int, batch: int | None) -> int:
    return batch or max(1, EVAL_TOKENS // max(length, 1))


def heldout_loss(
    model: PreTrainedModel, tokens: np.ndarray, sequence_length: int, sequences: int, batch: int | None = None
) -> float:
    """Mean next-token loss over the first `sequences` consecutive windows of a held-out stream."""
    import torch

    batch = _batch_for(sequence_length, batch)
    count = min(sequences, (len(tokens) - 1) // sequence_length)
    if count < 1:
        raise MidtrainError.single(
            f"held-out stream has {len(tokens)} tokens, fewer than one window of {sequence_length + 1}"
        )
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, count, batch):
            rows = [
                tokens[i * sequence_length : i * sequence_length + sequence_length + 1]
                for i in range(start, min(start + batch, count))
            ]
            window = torch.from_numpy(np.stack(rows).astype(np.int64))
            logits = model(input_ids=window[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(loss)
            n += window[:, 1:].numel()
    return total / n


def position_losses(
    model: PreTrainedModel,
    tokens: np.ndarray,
    doc_starts: np.ndarray,
    length: int,
    documents: int,
    batch: int | None = None,
) -> np.ndarray:
    """Mean loss at each position 0..length-2 over windows that start at document starts."""
    import torch

    batch = _batch_for(length, batch)
    starts = [int(s) for s in doc_starts if s + length <= len(tokens)][:documents]
    if not starts:
        raise MidtrainError.single(f"no held-out long document has {length} tokens")
    sums = np.zeros(length - 1)
    with torch.no_grad():
        for i in range(0, len(starts), batch):
            window = torch.from_numpy(
                np.stack([tokens[s : s + length] for s in starts[i : i + batch]]).astype(np.int64)
            )
            logits = model(input_ids=window[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), window[:, 1:], reduction="none")
            sums += loss.sum(0).numpy()
    return sums / len(starts)


def _generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int, batch: int = 64
) -> list[str]:
    """Greedy continuations (left-padded batches)."""
    import torch

    outputs: list[str] = []
    # a causal LM's class mixes in GenerationMixin; PreTrainedModel itself does not declare `generate`
    generate = cast("GenerationMixin", model).generate
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[i : i + batch]]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
            generated = generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            outputs.extend(tokenizer.batch_decode([g[width:] for g in generated], skip_special_tokens=True))
    return outputs


def math_exact_match(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], max_new_tokens: int
) -> float:
    """Share of held-out problems whose generated solution ends with the right 'Answer: N'."""
    completions = _generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens)
    correct = 0
    for row, text in zip(rows, completions):
        match = re.search(r"Answer:\s*(-?\d+)", text)
        correct += bool(match and int(match.group(1)) == row["answer"])
    return correct / len(rows)


def retrieval_prompts(
    tokenizer: PreTrainedTokenizerBase, length: int, documents: int, seed: int = 0
) -> list[tuple[str, int]]:
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


def retrieval_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[tuple[str, int]]
) -> float:
    completions = _generate(model, tokenizer, [p for p, _ in prompts], max_new_tokens=4, batch=32)
    hits = 0
    for (_, value), text in zip(prompts, completions):
        match = re.search(r"\d+", text)
        hits += bool(match and int(match.group(0)) == value)
    return hits / len(prompts)


def evaluate(config: StandInEval | BenchmarkEval, root: Path = Path("."), progress: bool = True) -> dict[str, Any]:
    """Evaluate the base and the final model of a plan's `eval.json` (a `StandInEval` or a
    `BenchmarkEval`); returns the metrics dictionary of metrics/eval.json."""
    import torch
    from transformers import AutoTokenizer

    from midtrain.data.packing import open_shard, read_manifest
    from midtrain.plan.contract import StandInEval
    from midtrain.progress import progress_bar

    torch.manual_seed(0)
    data = root / config.data
    shard_dir = data / "shards"
    manifest = read_manifest(shard_dir)
    shards = {
        name: open_shard(shard_dir, entry) for name, entry in manifest["streams"].items() if name.endswith(".heldout")
    }
    domains = {d: s for d, s in config.domains.items() if s in shards}
    models = {"base": config.base, "final": config.final}
    tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"), trust_remote_code=False)
    stand_in = config if isinstance(config, StandInEval) else None  # math and retrieval on the built-in data
    results: dict[str, Any] = {
        "loss": {},
        "perplexity": {},
        "position_loss": {"in_context": {}, "beyond": {}},
        "position_curve": {},
    }
    if stand_in is not None:
        results.update(retrieval={}, math_exact_match={})
        rows = [json.loads(line) for line in _heldout_math(data)[: stand_in.math_problems]]
        retrieval_sets = {
            n: retrieval_prompts(tokenizer, n, stand_in.retrieval_documents) for n in stand_in.retrieval_lengths
        }
    position = config.position if config.position and config.position.stream in shards else None
    steps = len(models) * (len(domains) + 1 + (2 if stand_in is not None else 0))
    with progress_bar("evaluate", steps, enabled=progress) as advance:
        for which, ref in models.items():
            model = _load(ref, root)
            for domain, stream in domains.items():
                loss = heldout_loss(model, np.asarray(shards[stream].tokens), config.sequence_length, config.sequences)
                results["loss"].setdefault(domain, {})[which] = loss
                results["perplexity"].setdefault(domain, {})[which] = math.exp(loss)
                advance(1)
            if position is not None:
                long = shards[position.stream]
                curve = position_losses(
                    model, np.asarray(long.tokens), long.doc_starts, position.length, config.sequences
                )
                cut = position.base_context
                results["position_loss"]["in_context"][which] = float(curve[: cut - 1].mean())
                results["position_loss"]["beyond"][which] = (
                    float(curve[cut - 1 :].mean()) if len(curve) >= cut else None
                )
                results["position_curve"][which] = [round(float(v), 5) for v in curve]
            advance(1)
            if stand_in is not None:
                results["math_exact_match"][which] = math_exact_match(
                    model, tokenizer, rows, stand_in.math_max_new_tokens
                )
                advance(1)
                for length, prompts in retrieval_sets.items():
                    results["retrieval"].setdefault(str(length), {})[which] = retrieval_accuracy(
                        model, tokenizer, prompts
                    )
                advance(1)
            del model
    if config.lm_eval is not None:
        results["benchmarks"] = benchmarks(config, root, tokenizer)
    results["relative_change"] = {d: v["final"] / v["base"] - 1 for d, v in results["loss"].items()}
    beyond, inside = results["position_loss"]["beyond"], results["position_loss"]["in_context"]
    results["beyond_vs_in_context"] = {
        w: (beyond[w] / inside[w] - 1) if beyond.get(w) is not None else None for w in inside
    }
    results["config"] = config.model_dump(
        mode="json", include={"kind", "base", "final", "sequence_length", "sequences", "position"}
    )
    return results


def benchmarks(
    config: StandInEval | BenchmarkEval, root: Path, tokenizer: PreTrainedTokenizerBase
) -> dict[str, dict[str, dict[str, float]]]:
    """lm-evaluation-harness on the base and the final model: {task: {metric: {"base": x, "final": y}}}."""
    import tempfile

    spec = config.lm_eval
    out: dict[str, dict[str, dict[str, float]]] = {}
    if spec is None:
        return out
    with tempfile.TemporaryDirectory(prefix="midtrain-tasks-") as tmp:
        include = [str(Path(p) if Path(p).is_absolute() else root / p) for p in spec.include_paths]
        if spec.local:
            write_local_tasks(Path(tmp), spec.local, root / config.data, tokenizer)
            include.append(tmp)
        for which in ("base", "final"):
            ref = getattr(config, which)
            local = root / ref.path
            scores = run_lm_eval(
                local if local.exists() else ref.path,
                spec.tasks,
                include,
                spec.limit,
                revision=None if local.exists() else ref.revision,
                batch_size=spec.batch_size,
                num_fewshot=spec.num_fewshot,
            )
            for task, metrics in scores.items():
                for metric, value in metrics.items():
                    if metric == "sample_len":
                        continue
                    out.setdefault(task, {}).setdefault(metric, {})[which] = value
    return out


def write_local_tasks(
    directory: Path, tasks: dict[str, dict[str, Any]], data: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """The shipped local lm-eval tasks, made from this data directory's held-out sets: multiple choice
    over the final answer of a held-out math problem (with its worked solution), and over the value
    of a planted fact at a given length."""
    for name, settings in tasks.items():
        rng = random.Random(f"task:{name}")
        rows: list[dict[str, Any]] = []
        if settings["kind"] == "math":
            for line in _heldout_math(data)[: settings["problems"]]:
                row = json.loads(line)
                context = row["text"][: row["text"].rindex("Answer:") + len("Answer:")]
                rows.append(_choice_row(context, row["answer"], rng))
        else:
            for prompt, value in retrieval_prompts(tokenizer, settings["length"], settings["documents"], seed=1):
                rows.append(_choice_row(prompt, value, rng))
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (directory / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(directory / (name + '.jsonl')))}\n"
            'test_split: test\noutput_type: multiple_choice\ndoc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\n'
            'doc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n',
            encoding="utf-8",
        )


def _choice_row(context: str, answer: int, rng: random.Random) -> dict[str, Any]:
    wrong: set[int] = set()
    while len(wrong) < 3:
        candidate = answer + rng.choice([-1, 1]) * rng.randint(1, max(3, abs(answer) // 4 + 1))
        if candidate != answer:
            wrong.add(candidate)
    choices = [answer, *sorted(wrong)]
    rng.shuffle(choices)
    return {"context": context, "choices": [f" {c}" for c in choices], "label": choices.index(answer)}


# ---------------------------------------------------------------- lm-evaluation-harness


def lm_eval_model(model: Path | str, batch_size: int = 8, revision: str | None = None) -> Any:
    """An lm-evaluation-harness `LM` backed by a saved model directory or a hub id@revision."""
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise MidtrainError.single("lm-evaluation-harness is not installed: `pip install 'midtrain[eval]'`") from None
    return HFLM(
        pretrained=str(model),
        revision=revision or "main",
        batch_size=batch_size,
        device="cuda" if _cuda() else "cpu",
        trust_remote_code=False,
    )


def run_lm_eval(
    model: Path | str,
    tasks: list[str],
    include_path: Path | str | list[str] | None = None,
    limit: int | None = None,
    revision: str | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
) -> dict[str, Any]:
    """Evaluate on lm-eval tasks (hub tasks, or local YAML task files under `include_path`)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MidtrainError.single("lm-evaluation-harness is not installed: `pip install 'midtrain[eval]'`") from None
    paths = (
        [str(p) for p in include_path]
        if isinstance(include_path, list)
        else ([str(include_path)] if include_path else None)
    )
    manager = _task_manager(TaskManager, paths, tasks)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise MidtrainError.single(
            f"unknown lm-eval task {unknown[0]!r} (option --eval-tasks; local task YAMLs go in --eval-include)",
            found=", ".join(unknown),
        )
    output = simple_evaluate(
        model=lm_eval_model(model, batch_size, revision),
        tasks=tasks,
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
    )
    return {
        task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for task, metrics in output["results"].items()
    }


def _task_manager(factory: Any, paths: list[str] | None, tasks: list[str]) -> Any:
    """lm-eval's task index over only the local task folders when they hold every task asked for
    (and none is a group, which may name lm-eval's own tasks): indexing lm-eval's thousands of
    bundled task files takes about 13 s a process here, the local ones a millisecond."""
    if paths:
        local = factory(include_path=paths, include_defaults=False)
        if all(t in local.all_tasks and t not in local.all_groups for t in tasks):
            return local
    return factory(include_path=paths)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
