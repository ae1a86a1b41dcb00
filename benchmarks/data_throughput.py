"""Data pipeline throughput, measured against baselines in the same run.

1. tokenize + pack (midtrain's `pack_stream`: encode, EOS, numpy packing, atomic write, sha256)
   vs raw `tokenizers` `encode_batch` on the same documents in memory. Goal: ratio >= 0.8.
2. mixture sampler: sequences/s of `MixtureSampler.batch` + gathering the token windows, against
   the sequences/s a tiny-scale model consumes in training (forward + backward measured here on
   the registry's tiny Llama stand-in). Goal: >= 50x.
3. peak RSS of a child process that decontaminates and packs 100 MB of text. Goal: < 1 GiB.
4. the data engine (`data prepare --executor local`, datatrove): tokens/s per worker with 1 and with
   2 workers on DIR's ten built-in streams, the scaling efficiency (per worker, 2 vs 1; 1.0 is
   linear), and 1 worker against the single-process path. Reported, no goal: on a 2-core machine
   the second worker competes with everything else that runs.

Comparisons 1 and 2 alternate their two programs (A B A B ... A, --repeats rounds, the baseline A
first), comparison 4 its three (single process, engine with 1 worker, with 2; --engine-repeats
rounds, 3 by default: about 3 minutes on 2 cores), and each reports the MEDIAN of the per-round
ratios and their min–max spread (benchmarks/_timing.py).

    python benchmarks/data_throughput.py [--data DIR] [--repeats 5] [--mb 20] [--engine-repeats 3] [--json]
    python benchmarks/data_throughput.py --engine-only      # comparison 4 alone

The last line is JSON: {"ratio_vs_encode_batch", "ratio_spread": [min, max], "sampler_vs_trainer", ...,
"engine_efficiency", "engine_efficiency_spread", "engine_tokens_per_s_per_worker": {"1", "2"}, ...}.

DIR is a `midtrain data prepare --scale tiny` output (made in a cache directory when absent).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import Ratio, add_repeats_argument, alternate, median, noise_note, paired_ratio  # noqa: E402


def ensure_data(directory: Path | None) -> Path:
    from midtrain.data.prepare import PrepareOptions, prepare_tiny

    directory = directory or REPO / ".cache" / "bench-data"
    if not (directory / "shards" / "manifest.json").exists():
        prepare_tiny(PrepareOptions(out=directory, progress=False))
    return directory


def corpus_texts(data: Path, limit_chars: float) -> list[str]:
    texts: list[str] = []
    total = 0
    for name in ("prose", "code", "math", "qa", "longdoc"):
        with open(data / "corpora" / f"{name}.train.jsonl", encoding="utf-8") as handle:
            for line in itertools.islice(handle, 4000):
                text = json.loads(line)["text"]
                texts.append(text)
                total += len(text)
                if total >= limit_chars:
                    return texts
    return texts


def bench_packing(
    data: Path, repeats: int, megabytes: float = 20, progress: bool = True
) -> tuple[dict[str, float], Ratio]:
    from midtrain.data.packing import pack_stream
    from midtrain.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(data / "tokenizer")
    texts = corpus_texts(data, megabytes * 1e6)
    chars = sum(len(t) for t in texts)
    with tempfile.TemporaryDirectory() as tmp:

        def raw() -> float:
            start = time.perf_counter()
            for i in range(0, len(texts), 512):
                tokenizer.tokenizer.encode_batch(texts[i : i + 512], add_special_tokens=False)
            return time.perf_counter() - start

        def ours() -> float:
            start = time.perf_counter()
            pack_stream(iter(texts), tokenizer, Path(tmp), "bench")
            return time.perf_counter() - start

        # warm both paths on a slice (tokenizer caches, numpy, the file system) before measuring
        tokenizer.tokenizer.encode_batch(texts[:512], add_special_tokens=False)
        pack_stream(iter(texts[:512]), tokenizer, Path(tmp), "warm")
        seconds = alternate({"raw encode_batch": raw, "pack_stream": ours}, repeats, progress=progress)
    ratio = paired_ratio(seconds.baseline_for("pack_stream"), seconds["pack_stream"])  # throughput ours / raw
    return (
        {
            "mb": chars / 1e6,
            "raw_encode_batch_mb_s": chars / 1e6 / median(seconds["raw encode_batch"]),
            "pack_mb_s": chars / 1e6 / median(seconds["pack_stream"]),
        },
        ratio,
    )


def tiny_trainer(sequence_length: int, batch: int, threads: int):  # type: ignore[no-untyped-def]
    """One forward + backward + AdamW step of the tiny Llama stand-in, as a callable returning seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from midtrain.catalog import load_catalog

    torch.set_num_threads(threads)
    dims = load_catalog(REPO).registry.models["llama-3.1-405b"].tiny
    config = LlamaConfig(vocab_size=2048, max_position_embeddings=4096, **dims.model_dump())
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 2048, (batch, sequence_length + 1))

    def step() -> float:
        start = time.perf_counter()
        loss = model(input_ids=ids[:, :-1], labels=ids[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    for _ in range(2):  # warm-up steps, discarded
        step()
    return step


def bench_sampler(
    data: Path, repeats: int, sequence_length: int = 128, batch: int = 32, progress: bool = True
) -> tuple[dict[str, float], Ratio]:
    from midtrain.data.mixture import MixtureSampler, gather
    from midtrain.data.packing import open_shard, read_manifest

    manifest = read_manifest(data / "shards")
    streams = {n: e for n, e in manifest["streams"].items() if n.endswith(".train")}
    shards = {n: open_shard(data / "shards", e) for n, e in streams.items()}
    sampler = MixtureSampler(
        {n: e["tokens"] for n, e in streams.items()},
        {"prose.train": 0.5, "code.train": 0.2, "math.train": 0.3},
        sequence_length,
        batch,
        seed=0,
    )
    train_step = tiny_trainer(sequence_length, batch, max(1, os.cpu_count() or 1))
    sampler_steps, trainer_steps = 400, 4
    offset = [0]

    def sampler_rate() -> float:
        start = time.perf_counter()
        for step in range(offset[0], offset[0] + sampler_steps):
            gather(shards, sampler.batch(step), sequence_length)
        offset[0] += sampler_steps
        return sampler_steps * batch / (time.perf_counter() - start)

    def trainer_rate() -> float:
        return trainer_steps * batch / sum(train_step() for _ in range(trainer_steps))

    rates = alternate({"tiny trainer": trainer_rate, "sampler": sampler_rate}, repeats, progress=progress)
    ratio = paired_ratio(rates["sampler"], rates.baseline_for("sampler"))
    return {
        "sampler_sequences_per_s": median(rates["sampler"]),
        "trainer_sequences_per_s": median(rates["tiny trainer"]),
    }, ratio


def bench_engine(data: Path, repeats: int, tasks: int = 2, progress: bool = True) -> dict[str, object]:
    """`data prepare` (tokenize, decontaminate, pack the ten built-in streams of DIR) on the data
    engine's local executor with 1 and with 2 workers (the same `tasks` parts, one tokenizer thread
    per task), and on the single-process path. Each run starts from the corpora and tokenizer of
    DIR (symlinked) and an empty shard folder, and is timed from the call to the returned manifest:
    planning, the eval index, the worker pool's start, both stages. Returns tokens/s per worker,
    and per round the scaling efficiency (2 workers' tokens/s per worker over 1 worker's, the two
    runs of the same round) and the engine (1 worker) against the single process."""
    from midtrain.data.engine import EngineOptions
    from midtrain.data.prepare import PrepareOptions, prepare_tiny

    counter = itertools.count()
    tokens: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:

        def run(engine: EngineOptions | None) -> float:
            out = Path(tmp) / f"run-{next(counter)}"
            out.mkdir()
            for part in ("corpora", "tokenizer"):
                (out / part).symlink_to(data / part)
            start = time.perf_counter()
            manifest = prepare_tiny(PrepareOptions(out=out, progress=False, engine=engine))
            seconds = time.perf_counter() - start
            tokens.append(sum(entry["tokens"] for entry in manifest["streams"].values()))
            shutil.rmtree(out)
            return tokens[-1] / seconds

        programs = {
            "single process": lambda: run(None),
            "engine, 1 worker": lambda: run(EngineOptions(workers=1, tasks=tasks)),
            "engine, 2 workers": lambda: run(EngineOptions(workers=2, tasks=tasks)),
        }
        rates = alternate(programs, repeats, progress=progress)
    assert len(set(tokens)) == 1, f"the runs packed different token counts: {sorted(set(tokens))}"
    one, two = rates["engine, 1 worker"], rates["engine, 2 workers"]
    return {
        "tokens": tokens[0],
        "tasks": tasks,
        "single_tokens_per_s": median(rates["single process"]),
        "one_worker_tokens_per_s": median(one),
        "two_workers_tokens_per_s_per_worker": median(two) / 2,
        "efficiency": paired_ratio([rate / 2 for rate in two], one),
        "engine_vs_single": paired_ratio(one, rates.baseline_for("engine, 1 worker")),
    }


CHILD = """
import itertools, json, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from midtrain.data.decontam import EvalIndex, Report, filter_documents
from midtrain.data.packing import pack_stream
from midtrain.data.tokenizer import load_tokenizer
data, out, target = Path({data!r}), Path({out!r}), {target}
index = EvalIndex(13)
for row in map(json.loads, open(data / "corpora" / "math.heldout.jsonl")):
    index.add(row["id"], row["prompt"])
def documents():
    total = 0
    for cycle in itertools.count():
        for name in ("prose", "code", "math", "qa", "longdoc"):
            with open(data / "corpora" / (name + ".train.jsonl"), encoding="utf-8") as handle:
                for number, line in enumerate(handle):
                    text = json.loads(line)["text"]
                    total += len(text.encode())
                    yield (f"{{name}}:{{cycle}}:{{number}}", text)
                    if total >= target:
                        return
report = Report(13, 0.5, "drop")
kept = filter_documents(documents(), index, report, "all")
entry = pack_stream((text for _, text in kept), load_tokenizer(data / "tokenizer"), out, "big")
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({{"tokens": entry["tokens"], "peak_rss_kib": int(hwm)}}))
"""


def bench_rss(data: Path, megabytes: int = 100) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        code = CHILD.format(repo=str(REPO), data=str(data), out=tmp, target=megabytes * 1_000_000)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - start
    # The child reports VmHWM, its own address space's peak: getrusage's maxrss survives fork + exec
    # on Linux, so it would report the (torch-loaded) parent's peak instead.
    report = json.loads(proc.stdout)
    return {
        "prepared_mb": megabytes,
        "peak_rss_mib": report["peak_rss_kib"] / 1024,
        "seconds": elapsed,
        "tokens": report["tokens"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    add_repeats_argument(parser)
    parser.add_argument("--mb", type=float, default=20, help="MB of text tokenized and packed per round (default 20)")
    parser.add_argument("--rss-mb", type=int, default=100, help="MB of text the peak-RSS child prepares (default 100)")
    parser.add_argument(
        "--engine-repeats", type=int, default=3, help="rounds of the data-engine comparison (default 3; 0 skips it)"
    )
    parser.add_argument("--engine-only", action="store_true", help="only the data-engine comparison")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    data = ensure_data(args.data)
    result: dict[str, object] = {}
    if not args.engine_only:
        result.update(bench_pipeline(data, args))
    if args.engine_repeats > 0:
        result.update(report_engine(bench_engine(data, args.engine_repeats, progress=not args.json), args.json))
    print(json.dumps(result))


def bench_pipeline(data: Path, args: argparse.Namespace) -> dict[str, object]:
    """Comparisons 1-3 (packing vs encode_batch, sampler vs trainer, peak RSS)."""
    packing, pack_ratio = bench_packing(data, args.repeats, args.mb, progress=not args.json)
    sampler, sampler_ratio = bench_sampler(data, args.repeats, progress=not args.json)
    rss = bench_rss(data, args.rss_mb)
    if not args.json:
        print(
            f"tokenize+pack {packing['pack_mb_s']:.2f} MB/s vs raw encode_batch {packing['raw_encode_batch_mb_s']:.2f} MB/s "
            f"(medians, {packing['mb']:.0f} MB each round): ratio {pack_ratio.text()} (goal >= 0.8)"
        )
        print(
            f"sampler {sampler['sampler_sequences_per_s']:,.0f} seq/s vs tiny trainer {sampler['trainer_sequences_per_s']:,.1f} seq/s: "
            f"{sampler_ratio.text(0, 'x')} (goal >= 50x)"
        )
        print(
            f"peak RSS preparing {rss['prepared_mb']} MB: {rss['peak_rss_mib']:.0f} MiB (goal < 1024) in {rss['seconds']:.0f}s"
        )
        note = noise_note(pack_ratio)
        if note:
            print(note)
    return {
        "ratio_vs_encode_batch": round(pack_ratio.median, 3),
        "ratio_spread": pack_ratio.spread(),
        "ratios": [round(v, 3) for v in pack_ratio.values],
        "sampler_vs_trainer": round(sampler_ratio.median, 1),
        "sampler_vs_trainer_spread": sampler_ratio.spread(1),
        "peak_rss_mib": round(rss["peak_rss_mib"], 1),
        "pack_mb_s": round(packing["pack_mb_s"], 2),
        "raw_encode_batch_mb_s": round(packing["raw_encode_batch_mb_s"], 2),
        "packed_mb": round(packing["mb"], 1),
        "sampler_sequences_per_s": round(sampler["sampler_sequences_per_s"], 1),
        "trainer_sequences_per_s": round(sampler["trainer_sequences_per_s"], 1),
        "rss_test_mb": rss["prepared_mb"],
        "rss_test_seconds": round(rss["seconds"], 1),
        "repeats": args.repeats,
    }


def report_engine(engine: dict[str, object], quiet: bool) -> dict[str, object]:
    efficiency, versus = engine["efficiency"], engine["engine_vs_single"]
    assert isinstance(efficiency, Ratio) and isinstance(versus, Ratio)
    if not quiet:
        print(
            f"data engine (local, {engine['tasks']} tasks, {engine['tokens']:,} tokens): "
            f"{engine['one_worker_tokens_per_s']:,.0f} tokens/s with 1 worker, "
            f"{engine['two_workers_tokens_per_s_per_worker']:,.0f} tokens/s per worker with 2 (medians); "
            f"scaling efficiency {efficiency.text()}; 1 worker vs the single process {versus.text()} "
            f"(single process: {engine['single_tokens_per_s']:,.0f} tokens/s)"
        )
        note = noise_note(efficiency, versus)
        if note:
            print(note)
    return {
        "engine_efficiency": round(efficiency.median, 3),
        "engine_efficiency_spread": efficiency.spread(),
        "engine_tokens_per_s_per_worker": {
            "1": round(float(engine["one_worker_tokens_per_s"])),  # type: ignore[arg-type]
            "2": round(float(engine["two_workers_tokens_per_s_per_worker"])),  # type: ignore[arg-type]
        },
        "engine_vs_single": round(versus.median, 3),
        "engine_vs_single_spread": versus.spread(),
        "single_tokens_per_s": round(float(engine["single_tokens_per_s"])),  # type: ignore[arg-type]
        "engine_tokens": engine["tokens"],
        "engine_repeats": len(efficiency.values),
    }


if __name__ == "__main__":
    main()
