"""Trainer throughput: midtrain's loop vs a minimal raw PyTorch loop vs Hugging Face `Trainer`.

All three train the same model (the registry's tiny Llama stand-in, or --hidden/--layers), from
the same initial weights, on the same token windows, with the same global batch, micro-batch and
AdamW settings, one after the other in this process. Each is timed over its optimizer steps after
the first (which pays one-off costs). Also reported: MFU against the fp32 matmul peak measured in
this run, and the peak RSS of the process.

    python benchmarks/trainer_throughput.py [--steps 40] [--json]

The last line is JSON: {"ratio_vs_raw_loop", "ratio_vs_hf_trainer", "mfu", "peak_rss_mib", ...}.
Goal: ratio_vs_raw_loop >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def peak_rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def matmul_peak_flops(size: int = 1024, repeats: int = 20) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data", type=Path, default=None, help="a tiny `midtrain data prepare` directory")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--micro", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    threads = max(1, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    os.environ["MIDTRAIN_THREADS"] = str(threads)
    from data_throughput import ensure_data  # noqa: E402  (same folder)

    from midtrain.catalog import load_catalog
    from midtrain.data.mixture import gather
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import Trainer, _sampler
    from midtrain.train.model import load_model
    from midtrain.train.optim import build_optimizer

    data = ensure_data(args.data)
    dims = load_catalog(REPO).registry.models["llama-3.1-405b"].tiny.model_dump()
    vocab = json.loads((data / "shards" / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    tmp = Path(tempfile.mkdtemp(prefix="midtrain-bench-"))
    spec = RunSpec.model_validate({
        "name": "bench", "out": str(tmp / "midtrain"), "tokenizer": str(data / "tokenizer"), "data": str(data),
        "init": {"family": "llama", "dims": dims, "vocab_size": vocab, "max_position_embeddings": args.seq_len},
        "streams": {"prose.train": 0.8, "code.train": 0.15, "math.train": 0.05},
        "sequence_length": args.seq_len, "global_batch": args.batch, "micro_batch": args.micro, "steps": args.steps,
        "schedule": {"type": "constant", "lr": 1e-3}, "checkpoint_every": 10 * args.steps, "threads": threads,
    })
    sampler, shards, _ = _sampler(spec)
    windows = [torch.from_numpy(gather(shards, sampler.batch(s), args.seq_len)) for s in range(args.steps)]
    tokens_per_step = args.batch * args.seq_len

    def raw_loop() -> tuple[float, int]:
        """1. a minimal raw PyTorch loop over pre-gathered windows."""
        model = load_model(spec)
        optimizer = build_optimizer(model, spec.optimizer, lr=1e-3)
        seconds = 0.0
        for step, batch in enumerate(windows):
            start = time.perf_counter()
            for chunk in batch.split(args.micro):
                logits = model(input_ids=chunk[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum")
                (loss / tokens_per_step).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step:
                seconds += time.perf_counter() - start
        return tokens_per_step * (args.steps - 1) / seconds, sum(p.numel() for p in model.parameters())

    def ours() -> float:
        """2. midtrain's trainer: sampler, gather, schedule, clipping, dvclive logging every step."""
        trainer = Trainer(spec, progress=False)
        trainer.fit(resume=False)
        return tokens_per_step * trainer.loop_steps / trainer.loop_seconds

    # Alternate twice and keep each one's best, so drift in the machine's load hits both alike.
    raw_runs, ours_runs = [], []
    for _ in range(2):
        tps, parameters = raw_loop()
        raw_runs.append(tps)
        ours_runs.append(ours())
    raw_tps, ours_tps = max(raw_runs), max(ours_runs)

    # 3. Hugging Face Trainer on the same windows
    from transformers import Trainer as HFTrainer
    from transformers import TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    rows = [{"input_ids": w[:-1], "labels": w[1:]} for batch in windows for w in batch]

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, index: int) -> dict:
            return rows[index]

    def collate(items: list[dict]) -> dict:
        return {"input_ids": torch.stack([i["input_ids"] for i in items]), "labels": torch.stack([i["labels"] for i in items])}

    class ShiftedTrainer(HFTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            logits = model(input_ids=inputs["input_ids"]).logits
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), inputs["labels"].reshape(-1))
            return (loss, logits) if return_outputs else loss

    step_times: list[float] = []
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):  # type: ignore[no-untyped-def]
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):  # type: ignore[no-untyped-def]
            step_times.append(time.perf_counter() - self.start)

    hf_model = load_model(spec)
    arguments = TrainingArguments(
        output_dir=str(tmp / "hf"), per_device_train_batch_size=args.micro, gradient_accumulation_steps=args.batch // args.micro,
        max_steps=args.steps, learning_rate=1e-3, lr_scheduler_type="constant", adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.1,
        max_grad_norm=1.0, logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
        dataloader_num_workers=0, seed=0,
    )
    ShiftedTrainer(model=hf_model, args=arguments, train_dataset=Windows(), data_collator=collate, callbacks=[Timer()]).train()
    hf_tps = tokens_per_step * (len(step_times) - 1) / sum(step_times[1:])

    config = hf_model.config
    flops_per_token = 6 * parameters + 12 * config.num_hidden_layers * config.hidden_size * args.seq_len
    peak = matmul_peak_flops()
    result = {
        "ratio_vs_raw_loop": round(ours_tps / raw_tps, 3),
        "ratio_vs_hf_trainer": round(ours_tps / hf_tps, 3),
        "mfu": round(ours_tps * flops_per_token / peak, 4),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "tokens_per_s": {"midtrain": round(ours_tps), "raw_loop": round(raw_tps), "hf_trainer": round(hf_tps)},
        "parameters": parameters,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "steps": args.steps, "threads": threads,
    }
    if not args.json:
        print(f"model {parameters / 1e6:.2f}M parameters, batch {args.batch}×{args.seq_len}, {threads} threads")
        for name, value in result["tokens_per_s"].items():
            print(f"  {name:<11} {value:>9,} tokens/s")
        print(f"midtrain vs raw loop {result['ratio_vs_raw_loop']:.3f} (goal >= 0.95); vs HF Trainer {result['ratio_vs_hf_trainer']:.3f}")
        print(f"MFU {result['mfu']:.1%} of a {result['matmul_peak_gflops']} GFLOP/s fp32 matmul peak; peak RSS {result['peak_rss_mib']:.0f} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
