"""Trainer throughput: midtrain's defaults vs Hugging Face `Trainer`'s defaults vs a raw PyTorch loop.

All three train the same model (the registry's tiny Llama stand-in), from the same initial weights,
on windows drawn by the same mixture sampler, with the same global batch and AdamW hyper-parameters,
in this one process, one program at a time, with torch's threads pinned to --threads. What differs
is how each runs the step:

- midtrain: its defaults, every machine setting `auto` (midtrain/train/auto.py), resolved for a run
  of --run-steps steps of this model on this machine (a real run's length; a 27-step run would not
  repay compiling) and pinned for the measured runs: precision, compile, attention, AdamW kernel,
  micro-batch, activation checkpointing;
- HF `Trainer`: its defaults (`per_device_train_batch_size` 8 with gradient accumulation up to the
  same global batch, its default optimizer `adamw_torch_fused`, no compile, fp32 on a CPU);
- the raw loop: a minimal loop with exactly midtrain's resolved settings (same micro-batch, AdamW
  kernel, attention, compiled when midtrain is): the ceiling midtrain's own work is measured against.

What is measured is the steady-state time per optimizer step: each run first takes --warmup
optimizer steps that are not counted (allocation, first-touch, lazy init, compilation), then
--steps measured ones, and the clock runs from the end of the last warm-up step to the end of the
last step. Each program marks the end of a step the same way: the raw loop after its optimizer
step, HF `Trainer` and midtrain's trainer in a callback of their own public callback interfaces
(`TrainerCallback.on_step_end`; `midtrain.train.loop.train(spec, callbacks=[...])`, which runs a
user's callbacks after the built-in ones). So each measured iteration of midtrain's includes all
of its per-step work: the sampler and gather, the LR schedule, clipping, dvclive logging and the
progress bookkeeping.

Compiled programs compile in their warm-up steps; one untimed midtrain run first fills the compile
cache.

The programs alternate (raw, midtrain, HF, matmul peak; --repeats rounds, default 5, and the raw
loop once more at the end); each round gives one ratio per comparison, against the raw loop
interpolated between its runs before and after, and the report is the MEDIAN ratio with its
min–max spread (benchmarks/_timing.py). MFU is midtrain's throughput against the fp32 matmul peak measured in the
same round.

    python benchmarks/trainer_throughput.py [--steps 24] [--warmup 3] [--repeats 5] [--run-steps 2000] [--json]

The last line is JSON: {"ratio_vs_raw_loop", "ratio_spread": [min, max], "ratio_vs_hf_trainer",
"ratio_vs_hf_trainer_spread", "mfu", "mfu_spread", "hf_trainer_mfu", "bf16_matmul_peak_gflops",
"ceiling_vs_hf_trainer", "settings", "peak_rss_mib", ...}.
Goals: ratio_vs_hf_trainer >= 1.5 and ratio_vs_raw_loop >= 0.95. `ceiling_vs_hf_trainer` bounds the
first: the best matmul rate of the machine (fp32, or bf16 where it is faster) over the rate HF's
defaults already reach, i.e. the ratio of a trainer that ran every FLOP at the matmul peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import Ratio, add_repeats_argument, alternate, median, noise_note, paired_ratio  # noqa: E402


def peak_rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def matmul_peak_flops(size: int = 1024, repeats: int = 20, dtype: str = "float32") -> float:
    import torch

    a, b = torch.randn(size, size, dtype=getattr(torch, dtype)), torch.randn(size, size, dtype=getattr(torch, dtype))
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--steps", type=int, default=24, help="measured steady-state optimizer steps per run (default 24)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="optimizer steps run first in every run and not measured (default 3)"
    )
    add_repeats_argument(parser)
    parser.add_argument(
        "--threads", type=int, default=max(1, os.cpu_count() or 1), help="torch threads (default: all cores)"
    )
    parser.add_argument("--data", type=Path, default=None, help="a tiny `midtrain data prepare` directory")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--run-steps",
        type=int,
        default=2000,
        help="the run length whose auto settings midtrain is measured with (default 2000)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    warmup, steps, threads = args.warmup, args.steps, args.threads
    total_steps = warmup + steps

    os.environ["MIDTRAIN_THREADS"] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    def pin() -> None:
        torch.set_num_threads(threads)

    pin()
    from data_throughput import ensure_data  # same folder

    from midtrain.catalog import load_catalog
    from midtrain.data.mixture import MixtureSampler, gather
    from midtrain.data.packing import open_shard, read_manifest
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train
    from midtrain.train.model import load_model
    from midtrain.train.optim import build_optimizer

    data = ensure_data(args.data)
    dims = load_catalog(REPO).registry.models["llama-3.1-405b"].tiny.model_dump()
    manifest = read_manifest(data / "shards")
    vocab = manifest["tokenizer"]["vocab_size"]
    tmp = Path(tempfile.mkdtemp(prefix="midtrain-bench-"))
    streams = {"prose.train": 0.8, "code.train": 0.15, "math.train": 0.05}
    base_spec = {
        "name": "bench",
        "out": str(tmp / "midtrain"),
        "tokenizer": str(data / "tokenizer"),
        "data": str(data),
        "init": {"family": "llama", "dims": dims, "vocab_size": vocab, "max_position_embeddings": args.seq_len},
        "streams": streams,
        "sequence_length": args.seq_len,
        "global_batch": args.batch,
        "steps": total_steps,
        "schedule": {"type": "constant", "lr": 1e-3},
        "checkpoint_every": 10 * total_steps,
        "threads": threads,
    }
    # midtrain's defaults: every machine setting auto, resolved for a run of --run-steps steps, then pinned
    from midtrain.train.auto import Footprint, Machine, describe, resolve
    from midtrain.train.model import count_parameters, model_config, supports_sdpa

    long_run = RunSpec.model_validate({**base_spec, "steps": args.run_steps})
    config = model_config(long_run)
    choices = resolve(
        long_run,
        Machine.probe(torch.device("cpu"), 1, threads),
        Footprint.of(config, count_parameters(config), sdpa=supports_sdpa(config)),
    )
    settings = {name: choice.value for name, choice in choices.items()}
    base_spec.update(settings)
    spec = RunSpec.model_validate(base_spec)
    micro = int(spec.micro_batch)
    # the windows midtrain's sampler draws: same manifest, shares, batch and data seed
    sampler = MixtureSampler(
        {n: manifest["streams"][n]["tokens"] for n in streams}, streams, args.seq_len, args.batch, seed=spec.data_seed
    )
    shards = {n: open_shard(data / "shards", manifest["streams"][n]) for n in streams}
    windows = [torch.from_numpy(gather(shards, sampler.batch(s), args.seq_len)) for s in range(total_steps)]
    tokens_per_step = args.batch * args.seq_len
    parameters = sum(p.numel() for p in load_model(spec).parameters())
    runs = [0]

    def raw_loop() -> float:
        """1. a minimal raw PyTorch loop over pre-gathered windows, with midtrain's resolved settings:
        seconds per steady-state step."""
        pin()
        model = load_model(spec)
        optimizer = build_optimizer(model, spec.optimizer, lr=1e-3, kernel=str(spec.optimizer_kernel))
        forward = torch.compile(model) if spec.compile else model
        marks = []
        for batch in windows:
            for chunk in batch.split(micro):
                logits = forward(input_ids=chunk[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
                )
                (loss / tokens_per_step).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            marks.append(time.perf_counter())
        return (marks[-1] - marks[warmup - 1]) / steps

    from midtrain.train.callbacks import Callback

    class StepEnds(Callback):
        """The end of every iteration of midtrain's trainer, after its built-in callbacks' work."""

        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_end(self, trainer: object, step: int, result: object) -> None:
            self.marks.append(time.perf_counter())

    def midtrain_run(n: int) -> list[float]:
        """One `train(spec)` call of n steps in a fresh output directory: when each step ended."""
        pin()
        runs[0] += 1
        out = tmp / f"midtrain-{runs[0]}"
        run_spec = RunSpec.model_validate({**base_spec, "out": str(out), "steps": n})
        ends = StepEnds()
        summary = train(run_spec, resume=False, progress=False, callbacks=[ends])
        if summary.get("steps", n) != n or len(ends.marks) != n:
            raise SystemExit(f"midtrain's trainer ran {len(ends.marks)} steps, expected {n}")
        shutil.rmtree(out, ignore_errors=True)
        return ends.marks

    def ours() -> float:
        """2. midtrain's trainer (sampler, gather, schedule, clipping, dvclive logging every step)."""
        marks = midtrain_run(total_steps)
        return (marks[-1] - marks[warmup - 1]) / steps

    # 3. Hugging Face Trainer on the same windows
    from transformers import Trainer as HFTrainer
    from transformers import TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    rows = [{"input_ids": w[:-1], "labels": w[1:]} for batch in windows for w in batch]

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, index: int) -> dict:
            return rows[index]

    def collate(items: list[dict]) -> dict:
        return {
            "input_ids": torch.stack([i["input_ids"] for i in items]),
            "labels": torch.stack([i["labels"] for i in items]),
        }

    class ShiftedTrainer(HFTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            logits = model(input_ids=inputs["input_ids"]).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), inputs["labels"].reshape(-1)
            )
            return (loss, logits) if return_outputs else loss

    class Marks(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_end(self, *a, **k):  # type: ignore[no-untyped-def]
            self.marks.append(time.perf_counter())

    hf_spec = RunSpec.model_validate({**base_spec, "attn_implementation": "auto"})  # transformers' default
    hf_micro = TrainingArguments(output_dir=str(tmp / "hf")).per_device_train_batch_size  # its default, 8

    def hf_trainer() -> float:
        """3. HF Trainer with its default performance settings (batch per device, optimizer, no compile)."""
        pin()
        hf_model = load_model(hf_spec)
        arguments = TrainingArguments(
            output_dir=str(tmp / "hf"),
            gradient_accumulation_steps=max(1, args.batch // hf_micro),
            max_steps=total_steps,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            adam_beta1=0.9,
            adam_beta2=0.95,
            weight_decay=0.1,
            max_grad_norm=1.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
            seed=0,
        )
        marks = Marks()
        trainer = ShiftedTrainer(
            model=hf_model, args=arguments, train_dataset=Windows(), data_collator=collate, callbacks=[marks]
        )
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # its end-of-training metrics line
            trainer.train()
        if len(marks.marks) != total_steps:
            raise SystemExit(f"HF Trainer ran {len(marks.marks)} steps, expected {total_steps}")
        return (marks.marks[-1] - marks.marks[warmup - 1]) / steps

    def peak() -> float:
        pin()
        return matmul_peak_flops()

    midtrain_run(warmup)  # once, not measured: the first call imports, initialises and compiles what later ones reuse
    progress = not args.json
    if progress:
        print(
            f"{parameters / 1e6:.2f}M parameters, batch {args.batch}×{args.seq_len}, {threads} threads; midtrain's auto "
            f"settings for a {args.run_steps}-step run: {describe(choices)}; HF Trainer: micro-batch {hf_micro}, its "
            "default optimizer; "
            f"{warmup} warm-up + {steps} measured steps per run, {args.repeats} alternated rounds",
            file=sys.stderr,
            flush=True,
        )
    seconds = alternate(
        {"raw loop": raw_loop, "midtrain": ours, "hf trainer": hf_trainer, "matmul peak": peak},
        args.repeats,
        progress=progress,
    )
    shutil.rmtree(tmp, ignore_errors=True)
    if torch.get_num_threads() != threads:
        print(f"warning: torch ended with {torch.get_num_threads()} threads, not {threads}", file=sys.stderr)

    # seconds per step: baseline time / our time = our throughput / baseline throughput. The raw loop,
    # first in every round and once more at the end, is interpolated to the moment each run happened.
    vs_raw = paired_ratio(seconds.baseline_for("midtrain"), seconds["midtrain"])
    hf_vs_raw = paired_ratio(seconds.baseline_for("hf trainer"), seconds["hf trainer"])
    vs_hf = Ratio(
        tuple(ours / hf for ours, hf in zip(vs_raw.values, hf_vs_raw.values))
    )  # both against the same baseline
    config = load_model(spec).config
    flops_per_token = 6 * parameters + 12 * config.num_hidden_layers * config.hidden_size * args.seq_len
    mfu = Ratio(
        tuple(tokens_per_step / s * flops_per_token / p for s, p in zip(seconds["midtrain"], seconds["matmul peak"]))
    )
    hf_mfu = Ratio(
        tuple(tokens_per_step / s * flops_per_token / p for s, p in zip(seconds["hf trainer"], seconds["matmul peak"]))
    )
    # The ceiling: no trainer beats HF's by more than the best matmul rate of this machine (fp32, or bf16
    # where the CPU has native bf16) over the rate HF already reaches. Measured once, after the rounds.
    pin()
    bf16_peak = matmul_peak_flops(dtype="bfloat16", repeats=3)
    best_peak = max(median(seconds["matmul peak"]), bf16_peak)
    ceiling = best_peak / median(seconds["matmul peak"]) / hf_mfu.median
    tps = {name: tokens_per_step / median(seconds[name]) for name in ("midtrain", "raw loop", "hf trainer")}
    result = {
        "ratio_vs_raw_loop": round(vs_raw.median, 3),
        "ratio_spread": vs_raw.spread(),
        "ratios": [round(v, 3) for v in vs_raw.values],
        "ratio_vs_hf_trainer": round(vs_hf.median, 3),
        "ratio_vs_hf_trainer_spread": vs_hf.spread(),
        "mfu": round(mfu.median, 4),
        "mfu_spread": mfu.spread(4),
        "hf_trainer_mfu": round(hf_mfu.median, 4),
        "bf16_matmul_peak_gflops": round(bf16_peak / 1e9, 1),
        "ceiling_vs_hf_trainer": round(ceiling, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "tokens_per_s": {
            "midtrain": round(tps["midtrain"]),
            "raw_loop": round(tps["raw loop"]),
            "hf_trainer": round(tps["hf trainer"]),
        },
        "seconds_per_step": {
            name.replace(" ", "_"): round(median(values), 4)
            for name, values in seconds.values.items()
            if name != "matmul peak"
        },
        "settings": settings,
        "hf_micro_batch": hf_micro,
        "parameters": parameters,
        "matmul_peak_gflops": round(median(seconds["matmul peak"]) / 1e9, 1),
        "steps": steps,
        "warmup": warmup,
        "repeats": args.repeats,
        "threads": threads,
    }
    if not args.json:
        print(
            f"model {parameters / 1e6:.2f}M parameters, batch {args.batch}×{args.seq_len}, {threads} threads; "
            f"median steady-state throughput over {args.repeats} rounds:"
        )
        for name, value in result["tokens_per_s"].items():
            print(f"  {name:<11} {value:>9,} tokens/s")
        print(f"midtrain vs raw loop with the same settings {vs_raw.text(3)} (goal >= 0.95)")
        print(f"midtrain's defaults vs HF Trainer's defaults {vs_hf.text(3)} (goal >= 1.5)")
        print(
            f"MFU {mfu.median:.1%} (spread {mfu.low:.1%}–{mfu.high:.1%}) of a {result['matmul_peak_gflops']} GFLOP/s fp32 matmul peak; "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB"
        )
        print(
            f"HF Trainer's MFU {hf_mfu.median:.1%}; bf16 matmul peak {bf16_peak / 1e9:.1f} GFLOP/s: no trainer can beat "
            f"HF's defaults here by more than {ceiling:.2f}x (every FLOP at the best matmul peak)"
        )
        note = noise_note(vs_raw, vs_hf)
        if note:
            print(note)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
