"""Data pipeline throughput, measured against baselines in the same run.

1. tokenize + pack (midtrain's `pack_stream`: encode, EOS, numpy packing, atomic write, sha256)
   vs raw `tokenizers` `encode_batch` on the same documents in memory. Goal: ratio >= 0.8.
2. mixture sampler: sequences/s of `MixtureSampler.batch` + gathering the token windows, against
   the sequences/s a tiny-scale model consumes in training (forward + backward measured here on
   the registry's tiny Llama stand-in). Goal: >= 50x.
3. peak RSS of a child process that decontaminates and packs 100 MB of text. Goal: < 1 GiB.

    python benchmarks/data_throughput.py [--data DIR] [--json]

DIR is a `midtrain data prepare --scale tiny` output (made in a cache directory when absent).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


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


def bench_packing(data: Path) -> dict[str, float]:
    from midtrain.data.packing import pack_stream
    from midtrain.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(data / "tokenizer")
    texts = corpus_texts(data, 20e6)
    chars = sum(len(t) for t in texts)
    raw_times, ours_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(2):  # alternate to share the machine's noise
            start = time.perf_counter()
            for i in range(0, len(texts), 512):
                tokenizer.tokenizer.encode_batch(texts[i : i + 512], add_special_tokens=False)
            raw_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            pack_stream(iter(texts), tokenizer, Path(tmp), "bench")
            ours_times.append(time.perf_counter() - start)
    raw, ours = min(raw_times), min(ours_times)
    return {"mb": chars / 1e6, "raw_encode_batch_mb_s": chars / 1e6 / raw, "pack_mb_s": chars / 1e6 / ours, "ratio_vs_encode_batch": raw / ours}


def trainer_sequences_per_s(sequence_length: int, batch: int) -> float:
    """Training consumption at tiny scale: forward + backward of the tiny Llama stand-in."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from midtrain.catalog import load_catalog

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    dims = load_catalog(REPO).registry.models["llama-3.1-405b"].tiny
    config = LlamaConfig(vocab_size=2048, max_position_embeddings=4096, **dims.model_dump())
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 2048, (batch, sequence_length + 1))
    times = []
    for step in range(6):
        start = time.perf_counter()
        loss = model(input_ids=ids[:, :-1], labels=ids[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:
            times.append(time.perf_counter() - start)
    return batch / (sum(times) / len(times))


def bench_sampler(data: Path, sequence_length: int = 128, batch: int = 32) -> dict[str, float]:
    from midtrain.data.mixture import MixtureSampler, gather
    from midtrain.data.packing import open_shard, read_manifest

    manifest = read_manifest(data / "shards")
    streams = {n: e for n, e in manifest["streams"].items() if n.endswith(".train")}
    shards = {n: open_shard(data / "shards", e) for n, e in streams.items()}
    sampler = MixtureSampler({n: e["tokens"] for n, e in streams.items()},
                             {"prose.train": 0.5, "code.train": 0.2, "math.train": 0.3}, sequence_length, batch, seed=0)
    steps = 400
    start = time.perf_counter()
    for step in range(steps):
        gather(shards, sampler.batch(step), sequence_length)
    elapsed = time.perf_counter() - start
    sampler_rate = steps * batch / elapsed
    consumed = trainer_sequences_per_s(sequence_length, batch)
    return {"sampler_sequences_per_s": sampler_rate, "trainer_sequences_per_s": consumed, "sampler_vs_trainer": sampler_rate / consumed}


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
    return {"prepared_mb": megabytes, "peak_rss_mib": report["peak_rss_kib"] / 1024, "seconds": elapsed, "tokens": report["tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = ensure_data(args.data)
    packing = bench_packing(data)
    sampler = bench_sampler(data)
    rss = bench_rss(data)
    result = {
        "ratio_vs_encode_batch": round(packing["ratio_vs_encode_batch"], 3),
        "sampler_sequences_per_s": round(sampler["sampler_sequences_per_s"], 1),
        "sampler_vs_trainer": round(sampler["sampler_vs_trainer"], 1),
        "peak_rss_mib": round(rss["peak_rss_mib"], 1),
        "pack_mb_s": round(packing["pack_mb_s"], 2),
        "raw_encode_batch_mb_s": round(packing["raw_encode_batch_mb_s"], 2),
        "trainer_sequences_per_s": round(sampler["trainer_sequences_per_s"], 1),
        "rss_test_mb": rss["prepared_mb"],
        "rss_test_seconds": round(rss["seconds"], 1),
    }
    if not args.json:
        print(f"tokenize+pack {packing['pack_mb_s']:.2f} MB/s vs raw encode_batch {packing['raw_encode_batch_mb_s']:.2f} MB/s: "
              f"ratio {packing['ratio_vs_encode_batch']:.2f} (goal >= 0.8)")
        print(f"sampler {sampler['sampler_sequences_per_s']:,.0f} seq/s vs tiny trainer {sampler['trainer_sequences_per_s']:,.1f} seq/s: "
              f"{sampler['sampler_vs_trainer']:,.0f}x (goal >= 50x)")
        print(f"peak RSS preparing {rss['prepared_mb']} MB: {rss['peak_rss_mib']:.0f} MiB (goal < 1024) in {rss['seconds']:.0f}s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
