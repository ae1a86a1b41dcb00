"""GPU smoke benchmark: midtrain's trainer on a 1B-parameter Llama, bf16, FSDP2 over every visible GPU.

One command, a few minutes:

    python benchmarks/gpu_throughput.py [--steps 200] [--seq-len 4096] [--per-gpu-batch 8] [--json]

It builds a Llama 3.2 1B-shaped model from its config (hidden 2048, 16 layers, 32 heads, 8 KV
heads, MLP 8192, vocabulary 128,256: 1.24B parameters), prepares the built-in tiny corpora once
(their token ids index the first rows of the embedding; the speed does not depend on which rows),
and runs `midtrain train` under torchrun with one process per GPU, FSDP2 and every machine setting
left to `auto` (train/auto.py: bf16, FlashAttention-2 when `flash_attn` is installed else SDPA,
fused AdamW, torch.compile, the largest micro-batch that fits, checkpointing only if needed).

It prints, from the run's summary (the first step, which compiles, is not measured):
- tokens/s per GPU;
- MFU against the GPU's dense bf16 peak from its data sheet (H100 / H200 SXM: 989 TFLOP/s), with
  the model FLOPs per token counted as 6·N plus attention's 12·layers·hidden·sequence (as torchtitan
  counts them);
- peak GPU memory allocated, and the settings `auto` chose.

Goal: >= 40% MFU on H100/H200 (torchtitan reports 33-39% for Llama 3.1 8B on 8 H100s without
Float8; OLMo-core about 40-48% for 1B-7B models). On a machine without a GPU it says so and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LLAMA_1B = {
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 8192,
}
VOCAB = 128_256
# dense bf16 peaks (no sparsity) from the vendors' data sheets, FLOP/s per GPU
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "4090": 165e12}


def dense_bf16_peak(name: str) -> float | None:
    for key, peak in PEAKS.items():
        if key in name:
            return peak
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200; the first is not timed)")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--per-gpu-batch", type=int, default=8, help="sequences per GPU and optimizer step")
    parser.add_argument("--data", type=Path, default=None, help="a `midtrain data prepare` directory to reuse")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_throughput.py: no CUDA GPU is visible here; this benchmark needs one (unrun)", file=sys.stderr)
        raise SystemExit(2)
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    peak = dense_bf16_peak(name)

    from data_throughput import ensure_data  # same folder

    data = ensure_data(args.data)
    work = Path(tempfile.mkdtemp(prefix="midtrain-gpu-bench-"))
    out = work / "run"
    spec = {
        "name": "bench/llama-1b",
        "out": str(out),
        "tokenizer": str(data / "tokenizer"),
        "data": str(data),
        "init": {"family": "llama", "dims": LLAMA_1B, "vocab_size": VOCAB, "max_position_embeddings": args.seq_len},
        "streams": {"prose.train": 0.8, "code.train": 0.15, "math.train": 0.05},
        "sequence_length": args.seq_len,
        "global_batch": args.per_gpu_batch * gpus,
        "steps": args.steps,
        "schedule": {"type": "constant", "lr": 3e-4},
        "strategy": "fsdp",
        "checkpoint_every": 10 * args.steps,  # no checkpoint inside the measured steps
        "log_every": 10,
        "on_repeat": "warn",
    }
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "midtrain", "train", str(spec_path), "--nproc-per-node", str(gpus)]
    print(f"{gpus} x {name}: training a 1.24B Llama, sequence {args.seq_len}, {args.steps} steps", file=sys.stderr)
    status = subprocess.run(command, cwd=REPO, env=dict(os.environ)).returncode
    if status:
        raise SystemExit(f"gpu_throughput.py: the training run failed (exit {status})")
    summary = json.loads((out / "summary.json").read_text())
    resolved = json.loads((out / "resolved.json").read_text())
    parameters = int(summary["parameters"])
    per_gpu = float(summary["tokens_per_s"]) / gpus
    flops_per_token = 6 * parameters + 12 * LLAMA_1B["num_hidden_layers"] * LLAMA_1B["hidden_size"] * args.seq_len
    mfu = per_gpu * flops_per_token / peak if peak else None
    result = {
        "gpus": gpus,
        "gpu": name,
        "parameters": parameters,
        "sequence_length": args.seq_len,
        "tokens_per_s_per_gpu": round(per_gpu),
        "mfu": round(mfu, 4) if mfu is not None else None,
        "dense_bf16_peak_tflops": peak / 1e12 if peak else None,
        "peak_memory_gib": summary.get("peak_memory_gib"),
        "settings": {k: v["value"] for k, v in resolved.items()},
    }
    print(f"tokens/s per GPU: {per_gpu:,.0f}")
    print(
        f"MFU: {mfu:.1%} of {peak / 1e12:.0f} TFLOP/s dense bf16 (goal >= 40%)"
        if mfu is not None
        else f"MFU: unknown dense bf16 peak for {name!r}"
    )
    print(f"peak memory allocated: {summary.get('peak_memory_gib', float('nan')):.1f} GiB per GPU")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()))
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
