"""`midtrain data prepare`: corpora -> tokenizer -> decontaminated, packed token shards.

Layout of the output directory:

    corpora/    built-in corpora as JSON lines + manifest.json       (tiny scale)
    tokenizer/  tokenizer.json, tokenizer_config.json, midtrain.json
    shards/     <stream>.bin / <stream>.idx + manifest.json          (stream = "<name>.<split>")
    decontam.json

Every step is resumable: a finished corpus, tokenizer or shard whose inputs have not changed is
kept, anything unfinished is rebuilt from scratch (writes are atomic, manifests written last).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.data import builtin
from midtrain.data.decontam import EvalIndex, Report, filter_documents
from midtrain.data.packing import pack_stream, read_manifest, shard_is_complete, write_manifest
from midtrain.data.tokenizer import SPECIAL_TOKENS
from midtrain.errors import MidtrainError
from midtrain.io import write_json
from midtrain.progress import progress_bar

if TYPE_CHECKING:
    from midtrain.data.engine import EngineOptions
    from midtrain.data.tokenizer import FastTokenizer
    from midtrain.schema.recipe import Recipe
    from midtrain.schema.registry import Registry
    from midtrain.schema.stage import Stage

TOKENIZER_SAMPLE_CHARS = 1_500_000
EVAL_SPLITS = {"math": "heldout", "longdoc": "heldout", "qa": "heldout"}


@dataclass
class PrepareOptions:
    out: Path
    vocab_size: int = 2048
    seed: int = 0
    ngram: int = 13
    threshold: float = 0.5
    action: str = "drop"  # or "flag"
    sizes: builtin.CorpusSizes = field(default_factory=builtin.CorpusSizes)
    extra_eval: list[Path] = field(default_factory=list)  # user evaluation sets (jsonl with "text")
    progress: bool = True
    engine: EngineOptions | None = None  # None: this process; else the datatrove data engine


def _hash(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def prepare_corpora(options: PrepareOptions) -> dict[str, Any]:
    """Build the built-in corpora that are missing or changed. Returns corpora/manifest.json."""
    directory = options.out / "corpora"
    manifest_path = directory / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    want = _hash({"seed": options.seed, "sizes": options.sizes.__dict__, "version": 1})
    with progress_bar("built-in corpora", len(builtin.BUILTINS), enabled=options.progress) as advance:
        for name in builtin.BUILTINS:
            entry = manifest.get(name)
            fresh = (
                entry
                and entry.get("inputs") == want
                and all((directory / s["file"]).exists() for s in entry["splits"].values())
            )
            if not fresh:
                entry = builtin.build_builtin(name, directory, options.seed, options.sizes)
                entry["inputs"] = want
                manifest[name] = entry
                write_json(manifest_path, manifest)
            advance(1)
    return manifest


def prepare_tokenizer(options: PrepareOptions, corpora: dict[str, Any]) -> Path:
    directory = options.out / "tokenizer"
    inputs = {
        "vocab": options.vocab_size,
        "corpora": {n: corpora[n]["splits"]["train"]["sha256"] for n in builtin.BUILTINS},
        "sample": TOKENIZER_SAMPLE_CHARS,
        # the special tokens (FIM sentinels since version 2) shift every id: a tokenizer trained
        # without them, and the shards packed with it, are rebuilt rather than silently reused
        "special_tokens": SPECIAL_TOKENS,
    }
    stamp = directory / "midtrain.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("inputs") == _hash(inputs):
        return directory
    from midtrain.data.tokenizer import sample_texts, train_bpe

    files = [options.out / "corpora" / corpora[n]["splits"]["train"]["file"] for n in builtin.BUILTINS]
    with progress_bar(f"tokenizer (BPE, vocab {options.vocab_size})", None, enabled=options.progress):
        train_bpe(sample_texts(files, TOKENIZER_SAMPLE_CHARS), options.vocab_size, directory)
    write_json(stamp, {"inputs": _hash(inputs), "vocab_size": options.vocab_size, "trained_on": "built-in corpora"})
    return directory


def build_eval_index(options: PrepareOptions, corpora: dict[str, Any]) -> EvalIndex:
    """n-grams of every evaluation set: the built-in held-out math/longdoc/QA items plus user files."""
    index = EvalIndex(n=options.ngram)
    for name, split in EVAL_SPLITS.items():
        for row in _read_rows(options.out / "corpora" / corpora[name]["splits"][split]["file"]):
            index.add(row["id"], row.get("prompt") or row.get("context") or row["text"])
    for path in options.extra_eval:
        from midtrain.data.sources import iter_local_rows

        for number, (_, row) in enumerate(iter_local_rows([path])):
            if "text" not in row:
                raise MidtrainError.single(
                    "evaluation rows need a 'text' field", file=path, line=number + 1, found=", ".join(sorted(row))
                )
            index.add(f"{path.name}:{number}", row["text"])
    return index


def save_base_tokenizer(ref: str, revision: str | None, directory: Path) -> Path:
    """The base model's own tokenizer, saved as a tokenizer directory (tokenizer.json and its
    config), so that data, training and evaluation all read the same files. Never runs code from
    the model folder."""
    inputs = _hash({"tokenizer": ref, "revision": revision})
    stamp = directory / "midtrain.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("inputs") == inputs:
        return directory
    from transformers import AutoTokenizer

    from midtrain.io import atomic_dir

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise MidtrainError.single(f"cannot load the tokenizer of {ref!r} (revision {revision}): {exc}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise MidtrainError.single(
            f"the tokenizer of {ref!r} has no fast (tokenizer.json) version, which midtrain needs"
        )
    if tokenizer.eos_token is None:
        raise MidtrainError.single(
            f"the tokenizer of {ref!r} has no end-of-text (eos) token; documents could not be separated"
        )
    with atomic_dir(directory) as tmp:
        tokenizer.save_pretrained(str(tmp))
        if not (tmp / "tokenizer.json").exists():
            tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        write_json(
            tmp / "midtrain.json", {"inputs": inputs, "vocab_size": len(tokenizer), "from": ref, "revision": revision}
        )
    return directory


def prepare_stand_in(options: PrepareOptions, tokenizer_ref: str, revision: str | None) -> dict[str, Any]:
    """Own base, offline: the built-in corpora, tokenized with the base's own tokenizer."""
    options.out.mkdir(parents=True, exist_ok=True)
    clean_stale(options.out)
    corpora = prepare_corpora(options)
    tokenizer_dir = save_base_tokenizer(tokenizer_ref, revision, options.out / "tokenizer")
    return prepare_shards(options, corpora, tokenizer_dir)


def _decontam_settings(options: PrepareOptions) -> dict[str, Any]:
    return {
        "n": options.ngram,
        "threshold": options.threshold,
        "action": options.action,
        "extra": [str(p) for p in options.extra_eval],
    }


def _builtin_jobs(
    options: PrepareOptions, corpora: dict[str, Any], tokenizer_dir: Path, splits: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The built-in streams, in the order they are packed: what to read, whether to decontaminate,
    and the inputs hash a finished shard is recognised by."""
    from midtrain.data.parts import corpus_origin

    tokenizer_hash = json.loads((tokenizer_dir / "midtrain.json").read_text())["inputs"]
    decontam = _decontam_settings(options)
    jobs = []
    for name in builtin.BUILTINS:
        for split in splits:
            corpus = corpora[name]["splits"][split]
            inputs = {
                "corpus": corpus["sha256"],
                "tokenizer": tokenizer_hash,
                "decontam": decontam if split == "train" else None,
            }
            jobs.append(
                {
                    "stream": f"{name}.{split}",
                    "origin": corpus_origin(options.out / "corpora" / corpus["file"]),
                    "decontaminate": split == "train",
                    "inputs": _hash(inputs),
                    "source": {"corpus": name, "split": split},
                    "corpus": corpus,
                }
            )
    return jobs


def _is_done(manifest: dict[str, Any], shard_dir: Path, job: dict[str, Any]) -> bool:
    entry = manifest["streams"].get(job["stream"])
    return bool(entry and entry.get("inputs") == job["inputs"] and shard_is_complete(shard_dir, entry))


def _manifest_tokenizer(tokenizer: FastTokenizer) -> dict[str, Any]:
    return {"path": "../tokenizer", "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id}


def prepare_shards(
    options: PrepareOptions,
    corpora: dict[str, Any],
    tokenizer_dir: Path,
    splits: tuple[str, ...] = ("train", "heldout"),
) -> dict[str, Any]:
    from midtrain.data.tokenizer import load_tokenizer

    shard_dir = options.out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(shard_dir) if (shard_dir / "manifest.json").exists() else {"streams": {}}
    tokenizer = load_tokenizer(tokenizer_dir)
    report = Report(options.ngram, options.threshold, options.action)
    index: EvalIndex | None = None
    jobs = _builtin_jobs(options, corpora, tokenizer_dir, splits)
    total_bytes = sum(job["corpus"]["bytes"] for job in jobs)
    report_path = options.out / "decontam.json"
    previous_report = json.loads(report_path.read_text()).get("sources", {}) if report_path.exists() else {}
    pending = []
    bar = options.progress and options.engine is None
    with progress_bar("tokenize + pack", total_bytes, unit=" bytes", enabled=bar) as advance:
        for job in jobs:
            stream, corpus = job["stream"], job["corpus"]
            if _is_done(manifest, shard_dir, job):
                if stream in previous_report:
                    report.sources[stream] = previous_report[stream]
                advance(corpus["bytes"])
                continue
            if options.engine is not None:  # the data engine packs every pending stream at once, below
                pending.append(job)
                continue
            rows: Iterable[tuple[str, str]] = (
                (row["id"], row["text"]) for row in _read_rows(options.out / "corpora" / corpus["file"])
            )
            if job["decontaminate"]:
                if index is None:
                    index = build_eval_index(options, corpora)
                rows = filter_documents(rows, index, report, stream, options.threshold, options.action)
            entry = _pack_corpus(rows, corpus, tokenizer, shard_dir, stream, advance)
            entry["inputs"] = job["inputs"]
            entry["source"] = job["source"]
            manifest["streams"][stream] = entry
            manifest["tokenizer"] = _manifest_tokenizer(tokenizer)
            write_json(report_path, report.to_json())  # counts first: a kill after the manifest never loses them
            write_manifest(shard_dir, manifest)
    if pending:
        order = [job["stream"] for job in jobs if job["decontaminate"]]
        return _run_engine(options, pending, tokenizer_dir, report, order, lambda: build_eval_index(options, corpora))
    write_json(report_path, report.to_json())
    return manifest


def _run_engine(
    options: PrepareOptions,
    jobs: list[dict[str, Any]],
    tokenizer_dir: Path,
    report: Report,
    order: list[str],
    build_index: Callable[[], EvalIndex],
) -> dict[str, Any]:
    """Pack the pending streams on the data engine (midtrain/data/engine.py): the same shards,
    manifest and report as the single-process path. `order` is the report's order of sources."""
    from midtrain.data.engine import run_engine
    from midtrain.data.packing import token_dtype
    from midtrain.data.tokenizer import load_tokenizer

    assert options.engine is not None
    tokenizer = load_tokenizer(tokenizer_dir)
    settings = {
        "shards": str((options.out / "shards").resolve()),
        "tokenizer": {
            "dir": str(tokenizer_dir.resolve()),
            "dtype": token_dtype(tokenizer.vocab_size).name,
            "manifest": _manifest_tokenizer(tokenizer),
        },
        "decontam": {"n": options.ngram, "threshold": options.threshold, "action": options.action},
        "report": {"path": str((options.out / "decontam.json").resolve()), "base": report.sources, "order": order},
    }
    keys = ("stream", "origin", "decontaminate", "inputs", "source")
    manifest = run_engine(
        options.out, [{k: job[k] for k in keys} for job in jobs], settings, options.engine, build_index
    )
    if manifest is None:  # submitted to Slurm: its merge job writes the shards and the manifest
        shard_dir = options.out / "shards"
        return read_manifest(shard_dir) if (shard_dir / "manifest.json").exists() else {"streams": {}}
    return manifest


def _pack_corpus(
    rows: Iterable[tuple[str, str]],
    corpus: dict[str, Any],
    tokenizer: FastTokenizer,
    shard_dir: Path,
    stream: str,
    advance: Callable[[float], None],
) -> dict[str, Any]:
    """Pack the (id, text) rows of one corpus split; progress is counted in the corpus's bytes."""
    bytes_per_doc = corpus["bytes"] / max(corpus["documents"], 1)

    def progress(docs: int, tokens: int) -> None:
        advance(docs * bytes_per_doc)

    return pack_stream((text for _, text in rows), tokenizer, shard_dir, stream, progress=progress)


def clean_stale(out: Path) -> None:
    """Temporaries of an earlier prepare killed with SIGKILL (its own cleanup never ran)."""
    from midtrain.io import remove_stale_temporaries

    for directory in (out.parent, out, out / "corpora", out / "shards"):
        remove_stale_temporaries(directory)


def prepare_tiny(options: PrepareOptions) -> dict[str, Any]:
    """Everything the tiny scale needs, built locally."""
    options.out.mkdir(parents=True, exist_ok=True)
    clean_stale(options.out)
    corpora = prepare_corpora(options)
    tokenizer_dir = prepare_tokenizer(options, corpora)
    return prepare_shards(options, corpora, tokenizer_dir)


def _source_inputs(source: Any, tokenizer_ref: str, revision: str | None, options: PrepareOptions) -> str:
    return _hash(
        {
            "source": source.model_dump(mode="json"),
            "tokenizer": tokenizer_ref,
            "revision": revision,
            "decontam": [options.ngram, options.threshold, options.action],
        }
    )


def prepare_sources(
    out: Path,
    sources: dict[str, Any],
    tokenizer_ref: str,
    revision: str | None = None,
    base: Path | None = None,
    progress: bool = True,
    seed: int = 0,
    engine: EngineOptions | None = None,
    sizes: builtin.CorpusSizes | None = None,
) -> dict[str, Any]:
    """Own and published bases: pack registry sources (hub ids or local files) with the base's
    tokenizer, plus the built-in held-out sets (per-domain held-out loss, decontamination)."""
    from midtrain.data.sources import iter_documents
    from midtrain.data.tokenizer import load_tokenizer

    options = PrepareOptions(out=out, seed=seed, progress=progress, engine=engine)
    if sizes is not None:
        options.sizes = sizes
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    report_path = out / "decontam.json"
    previous = json.loads(report_path.read_text()) if report_path.exists() else {}
    corpora = prepare_corpora(options)
    tokenizer_dir = save_base_tokenizer(tokenizer_ref, revision, out / "tokenizer")
    if engine is not None:
        return _sources_on_engine(options, corpora, tokenizer_dir, sources, (tokenizer_ref, revision), base, previous)
    prepare_shards(options, corpora, tokenizer_dir, splits=("heldout",))
    shard_dir = out / "shards"
    manifest = read_manifest(shard_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    index = build_eval_index(options, corpora)
    report = Report(options.ngram, options.threshold, options.action)
    report.sources.update(previous.get("sources", {}))
    for name, source in sources.items():
        stream = f"{name}.train"
        inputs = _source_inputs(source, tokenizer_ref, revision, options)
        entry = manifest["streams"].get(stream)
        if entry and entry.get("inputs") == inputs and shard_is_complete(shard_dir, entry):
            continue
        documents = ((f"{name}:{number}", text) for number, text in enumerate(iter_documents(source, name, base=base)))
        kept = filter_documents(documents, index, report, stream, options.threshold, options.action)
        with progress_bar(f"tokenize + pack {name}", source.approx_tokens, unit=" tokens", enabled=progress) as advance:
            entry = pack_stream(
                (text for _, text in kept), tokenizer, shard_dir, stream, progress=lambda docs, tokens: advance(tokens)
            )
        entry["inputs"] = inputs
        entry["source"] = {"registry": name}
        manifest["streams"][stream] = entry
        manifest["tokenizer"] = _manifest_tokenizer(tokenizer)
        write_manifest(shard_dir, manifest)
        write_json(report_path, report.to_json())
    write_json(report_path, report.to_json())
    return manifest


def _sources_on_engine(
    options: PrepareOptions,
    corpora: dict[str, Any],
    tokenizer_dir: Path,
    sources: dict[str, Any],
    tokenizer: tuple[str, str | None],
    base: Path | None,
    previous: dict[str, Any],
) -> dict[str, Any]:
    """`prepare_sources` on the data engine: the built-in held-out streams and the registry
    sources, all pending ones in one engine run, with the single-process path's result."""
    from midtrain.data.parts import source_origin

    shard_dir = options.out / "shards"
    manifest = read_manifest(shard_dir) if (shard_dir / "manifest.json").exists() else {"streams": {}}
    jobs = _builtin_jobs(options, corpora, tokenizer_dir, ("heldout",))
    for name, source in sources.items():
        inputs = _source_inputs(source, *tokenizer, options)
        jobs.append({"stream": f"{name}.train", "decontaminate": True, "inputs": inputs, "source": {"registry": name}})
        if not _is_done(manifest, shard_dir, jobs[-1]):  # files listed, hub datasets opened: only when pending
            jobs[-1]["origin"] = source_origin(name, source, base)
    pending = [job for job in jobs if not _is_done(manifest, shard_dir, job)]
    report = Report(options.ngram, options.threshold, options.action)
    report.sources.update(previous.get("sources", {}))
    if not pending:
        write_json(options.out / "decontam.json", report.to_json())
        return manifest
    order = [
        *report.sources,
        *(job["stream"] for job in jobs if job["decontaminate"] and job["stream"] not in report.sources),
    ]
    return _run_engine(options, pending, tokenizer_dir, report, order, lambda: build_eval_index(options, corpora))


def stage_streams(recipe: Recipe, stage: Stage, registry: Registry, scale: str) -> dict[str, float]:
    """Mixture shares by stream: at tiny scale sources collapse onto their built-in stand-ins."""
    shares = stage.mixture.shares()
    if scale != "tiny":
        return {f"{name}.train": share for name, share in shares.items()}
    out: dict[str, float] = {}
    for name, share in shares.items():
        stream = f"{registry.sources[name].builtin.value}.train"
        out[stream] = out.get(stream, 0.0) + share
    return out
