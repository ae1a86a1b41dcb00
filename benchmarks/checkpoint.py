"""Checkpoint save and load, single-file vs distributed (DCP), with 2 processes (FSDP2, gloo).

The model is a Llama of about 134M parameters (hidden 768, 12 layers, vocabulary 32,000, untied
head; --hidden / --layers / --vocab change it) wrapped with FSDP2 over 2 processes, with AdamW state
(one optimizer step taken first), so a checkpoint holds the fp32 weights and both moments: 12 bytes
per parameter. The compared programs are midtrain's own code paths:

- single-file (what one-process runs write, and what every run wrote before DCP): the full model
  and optimizer state gathered to rank 0 (`saving.state_dicts`), written there as
  model.safetensors + optimizer.pt with a sha256 manifest (`checkpoint.save`); loading is the
  resume path (`resume._attempt`): every rank verifies and reads the whole files, then
  `set_state_dict` keeps its shard.
- DCP (what multi-process runs write now): every rank writes its shard (`dcp.save_checkpoint`:
  `torch.distributed.checkpoint.save`, per-rank hashing, manifest, rename); loading is the same
  resume path, each rank hashing a share of the files and reading only its chunks.
- DCP async: the time the training loop is blocked by `--async-checkpoint` (the state copied to
  CPU memory; the writing goes on in a background thread and is completed before the next round).

The programs alternate (single-file first in every round and once more at the end, --repeats
rounds, default 5); each round gives one ratio against single-file interpolated between its runs
around it, and the report is the MEDIAN ratio with its min–max spread (benchmarks/_timing.py).
Times are wall seconds from a barrier before to a barrier after (the slowest rank). Peak memory
is how far each process's RSS rose above what it was before the operation (VmHWM, reset before it
through /proc/self/clear_refs, minus VmRSS then), on rank 0 and on the other rank; freed memory is
handed back to the OS before each operation (glibc's malloc_trim), so one operation's leftovers
do not hide the next one's peak. Loads read files the page cache still
holds (they were just written): they measure the CPU side, not the disk.

    python benchmarks/checkpoint.py [--repeats 5] [--json] [--dir DIR]

The last line is JSON: {"save_ratio_dcp_vs_single", "save_ratio_spread", "load_ratio_dcp_vs_single",
"load_ratio_spread", "async_blocked_ratio", "peak_rss_mib": {...}, "seconds": {...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import Ratio, Runs, add_repeats_argument, alternate, median, noise_note, paired_ratio  # noqa: E402

PROGRAMS = ("save_single", "save_dcp", "save_dcp_async", "load_single", "load_dcp")


def _peak_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Return freed heap to the OS (glibc's malloc_trim), then reset VmHWM to the RSS now (Linux >= 4.0)."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


class Run:
    """What midtrain's checkpoint code reads of a Trainer, for a bare FSDP2 model and optimizer."""

    def __init__(self, dist: Any, model: Any, optimizer: Any, root: Path, parameters: int) -> None:
        from types import SimpleNamespace

        self.dist, self.model, self.optimizer, self.parameters = dist, model, optimizer, parameters
        self.root, self.step, self.tokens_seen = root, 0, 0
        self.callbacks: list[Any] = []
        self.strategy = "fsdp"
        self.checkpoint_dir = root
        self.spec = SimpleNamespace(steps=10**6, keep_last=1, name="bench", tokenizer=Path("none"))

    def barrier(self) -> None:
        import torch

        torch.distributed.barrier()

    def lr(self, step: int) -> float:
        return 1e-4


def build(args: argparse.Namespace, dist: Any) -> tuple[Any, Any, int]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from midtrain.train.distributed import wrap

    config = LlamaConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        intermediate_size=args.hidden * 8 // 3 // 64 * 64,
        vocab_size=args.vocab,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    model = wrap(model, "fsdp", dist, "fp32")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    ids = torch.randint(0, args.vocab, (1, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer, parameters


def programs(run: Run, single: Path, dcp_dir: Path, record: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """The five operations, each timed between barriers and with its peak RSS recorded."""
    import torch

    from midtrain.train import checkpoint as ckpt
    from midtrain.train import dcp, resume, saving

    def state() -> dict[str, Any]:
        return {"tokens_seen": 0, "rng": ckpt.rng_state(), "run": "bench", "parameters": run.parameters}

    def save_single() -> None:
        run.checkpoint_dir = single
        model_state, optimizer_state = saving.state_dicts(run)  # type: ignore[arg-type]
        if run.dist.main:
            ckpt.save(single, run.step, model_state, optimizer_state, state(), None, keep_last=1)
        del model_state, optimizer_state

    def save_dcp() -> None:
        run.checkpoint_dir = dcp_dir
        dcp.save_checkpoint(run, {**state(), "strategy": "fsdp", "tokenizer": ""}, {})  # type: ignore[arg-type]

    def load(directory: Path) -> None:
        step = run.step
        problem, _ = resume._attempt(run, ckpt.list_checkpoints(directory)[-1])  # type: ignore[arg-type]
        assert problem is None, problem
        run.step = step  # a load sets the step it read; the next save gets a new one

    def timed(name: str, action: Any) -> Any:
        def measure() -> float:
            run.step += 1
            run.barrier()
            _reset_peak()
            before = _rss_kib()
            start = time.perf_counter()
            blocked = action()
            run.barrier()
            seconds = time.perf_counter() - start
            peak = torch.tensor([(_peak_kib() - before) / 1024], dtype=torch.float64)  # above the RSS before
            peaks = [torch.zeros_like(peak) for _ in range(run.dist.world)]
            torch.distributed.all_gather(peaks, peak)
            record[name].append({"seconds": seconds, "rank0": float(peaks[0]), "other": float(max(peaks[1:]))})
            return float(blocked) if blocked is not None else seconds

        return measure

    def save_async() -> float:
        os.environ[dcp.ASYNC_ENV] = "1"
        start = time.perf_counter()
        save_dcp()  # returns once the state is staged in CPU memory
        blocked = time.perf_counter() - start
        os.environ.pop(dcp.ASYNC_ENV)
        dcp.finish_pending(run)  # type: ignore[arg-type]
        return blocked

    return {
        "save_single": timed("save_single", save_single),
        "save_dcp": timed("save_dcp", save_dcp),
        "save_dcp_async": timed("save_dcp_async", save_async),
        "load_single": timed("load_single", lambda: load(single)),
        "load_dcp": timed("load_dcp", lambda: load(dcp_dir)),
    }


def worker(args: argparse.Namespace) -> None:
    import torch

    from midtrain.train.distributed import setup, teardown

    torch.set_num_threads(1)
    dist = setup()
    root = Path(args.dir)
    model, optimizer, parameters = build(args, dist)
    run = Run(dist, model, optimizer, root, parameters)
    record: dict[str, list[dict[str, float]]] = {name: [] for name in PROGRAMS}
    runs = alternate(programs(run, root / "single", root / "dcp", record), args.repeats, progress=dist.main)
    if dist.main:
        sizes = {
            name: sum(f.stat().st_size for f in (root / name).rglob("*") if f.is_file()) for name in ("single", "dcp")
        }
        result = {"parameters": run.parameters, "bytes": sizes, "values": runs.values, "record": record}
        # saves against single-file saves, loads against single-file loads, each interpolated in time
        result["baseline"] = {name: runs.baseline_for(name) for name in ("save_dcp", "save_dcp_async")}
        result["baseline"]["load_dcp"] = Runs("load_single", runs.values, runs.times).baseline_for("load_dcp")
        Path(args.result).write_text(json.dumps(result))
    teardown()


def launch(args: argparse.Namespace, root: Path, result: Path) -> None:
    """This script under torchrun (2 processes, one thread each), in a process group of its own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        f"--master-port={port}",
        str(Path(__file__).resolve()),
        "--worker",
        "--dir",
        str(root),
        "--result",
        str(result),
        "--repeats",
        str(args.repeats),
        "--hidden",
        str(args.hidden),
        "--layers",
        str(args.layers),
        "--vocab",
        str(args.vocab),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIDTRAIN_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=sys.stderr)
    try:
        status = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise SystemExit(f"the benchmark ran past --timeout {args.timeout}s; killed") from None
    if status:
        raise SystemExit(f"torchrun exited with status {status}")


def report(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    values, baseline = data["values"], data["baseline"]
    ratios = {
        "save": paired_ratio(values["save_dcp"], baseline["save_dcp"]),
        "load": paired_ratio(values["load_dcp"], baseline["load_dcp"]),
        "async": paired_ratio(values["save_dcp_async"], baseline["save_dcp_async"]),
    }
    record = data["record"]
    peaks = {
        name: {side: round(median([r[side] for r in record[name]]), 0) for side in ("rank0", "other")}
        for name in PROGRAMS
    }
    seconds = {name: round(median([r["seconds"] for r in record[name]]), 3) for name in PROGRAMS}
    blocked = round(median(values["save_dcp_async"]), 3)
    gigabytes = data["bytes"]["dcp"] / 1e9
    result = {
        "save_ratio_dcp_vs_single": round(ratios["save"].median, 3),
        "save_ratio_spread": ratios["save"].spread(),
        "load_ratio_dcp_vs_single": round(ratios["load"].median, 3),
        "load_ratio_spread": ratios["load"].spread(),
        "async_blocked_ratio": round(ratios["async"].median, 3),
        "async_blocked_ratio_spread": ratios["async"].spread(),
        "async_blocked_seconds": blocked,
        "seconds": seconds,
        "peak_rss_mib": peaks,
        "parameters": data["parameters"],
        "checkpoint_gb": {name: round(size / 1e9, 3) for name, size in data["bytes"].items()},
        "dcp_write_gb_s_per_process": round(gigabytes / 2 / seconds["save_dcp"], 3),
        "repeats": args.repeats,
        "processes": 2,
    }
    return result


def _print(result: dict[str, Any], ratios: list[Ratio]) -> None:
    s, p = result["seconds"], result["peak_rss_mib"]
    print(f"model: {result['parameters'] / 1e6:.0f}M parameters, checkpoint {result['checkpoint_gb']} GB, 2 processes")
    print(f"save: single-file {s['save_single']:.2f}s, DCP {s['save_dcp']:.2f}s: DCP/single {ratios[0].text(3)}")
    print(f"load: single-file {s['load_single']:.2f}s, DCP {s['load_dcp']:.2f}s: DCP/single {ratios[1].text(3)}")
    print(
        f"async DCP save blocks training {result['async_blocked_seconds']:.2f}s: vs single-file save {ratios[2].text(3)}"
    )
    for name in PROGRAMS:
        print(f"  peak RSS rise {name:15s} rank 0 {p[name]['rank0']:8,.0f} MiB   rank 1 {p[name]['other']:8,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_repeats_argument(parser)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dir", type=Path, default=None, help="where checkpoints are written (default: a temp dir)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds before the run is killed (default 900)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    root = Path(tempfile.mkdtemp(prefix="midtrain-bench-ckpt-", dir=args.dir))
    try:
        launch(args, root, root / "result.json")
        data = json.loads((root / "result.json").read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = report(data, args)
    values, baseline = data["values"], data["baseline"]
    ratios = [
        paired_ratio(values["save_dcp"], baseline["save_dcp"]),
        paired_ratio(values["load_dcp"], baseline["load_dcp"]),
        paired_ratio(values["save_dcp_async"], baseline["save_dcp_async"]),
    ]
    if not args.json:
        _print(result, ratios)
        note = noise_note(*ratios[:2])
        if note:
            print(note)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
