"""Resolve a base model the way a download would, and read what planning needs from its config.

A hub id goes through `huggingface_hub` (cache, revision, `HF_HUB_OFFLINE`), never as a path; the
commit it resolves to is recorded. A local directory is fingerprinted by its files. Only
`config.json` is read, as JSON: nothing in a model folder is ever imported or executed, and a
config that needs the folder's own code (`auto_map` with an unknown `model_type`) is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
OPTION = "--base"


@dataclass(frozen=True)
class ResolvedBase:
    """A base model as planning sees it."""

    ref: str  # hub id, or the directory as given (relative paths stay relative to the project)
    revision: str | None  # the resolved commit for a hub id; None for a directory
    is_hub: bool
    config: dict[str, Any]
    fingerprint: str

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def context(self) -> int:
        value = self.config.get("max_position_embeddings") or self.config.get("n_positions")
        if not isinstance(value, int) or value <= 0:
            raise MidtrainError.single(
                "the base's config.json has no max_position_embeddings",
                file=self.config_path,
                expected="a positive integer",
                found=repr(value),
            )
        return value

    @property
    def has_rope(self) -> bool:
        return any(key in self.config for key in ("rope_parameters", "rope_theta", "rope_scaling"))

    @property
    def rope_theta(self) -> float:
        params = self.config.get("rope_parameters") or {}
        theta = params.get("rope_theta") if isinstance(params, dict) else None
        theta = theta or self.config.get("rope_theta") or 10_000.0
        return float(theta)

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("vocab_size") or 0)

    @property
    def config_path(self) -> Path:
        return Path(self.ref) / "config.json" if not self.is_hub else Path(f"{self.ref}@{self.revision}/config.json")

    def slug(self) -> str:
        """A short, path-safe name: org--name-commit8, or dirname-digest8."""
        if self.is_hub:
            return f"{self.ref.replace('/', '--')}-{(self.revision or 'main')[:8]}"
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(self.ref).resolve().name)[:60] or "model"
        return f"{name}-{self.fingerprint[:8]}"


def _is_causal_lm(config: dict[str, Any]) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = config.get("architectures") or []
    if architectures and not any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return False
    return config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def check_config(config: dict[str, Any], where: Path) -> None:
    """Refuse configs midtrain cannot train without running the folder's own code."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise MidtrainError.single("config.json has no model_type", file=where, expected="e.g. llama, qwen3, olmo2")
    if model_type not in CONFIG_MAPPING_NAMES:
        code = (
            " It asks to run the folder's own Python code (auto_map), which midtrain never does."
            if config.get("auto_map")
            else ""
        )
        raise MidtrainError.single(
            f"model_type {model_type!r} is not a transformers architecture.{code} Convert the model to a transformers "
            "architecture, or upgrade transformers if this one is newer",
            file=where,
            found=model_type,
        )
    if not _is_causal_lm(config):
        raise MidtrainError.single(
            "not a causal language model; mid-training continues next-token prediction",
            file=where,
            expected="a *ForCausalLM architecture",
            found=", ".join(map(str, config.get("architectures") or [model_type])),
        )


def directory_fingerprint(directory: Path) -> str:
    """Content digest of the small files, and name/size/mtime of the large ones (weights)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(path.name.encode() + b"\0")
        if stat.st_size <= 1 << 20:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MidtrainError.single(f"cannot read the model config: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise MidtrainError.single("config.json is not a JSON object", file=path)
    return data


def resolve_base(
    ref: str, revision: str | None = None, root: Path | None = None, cache_only: bool = False
) -> ResolvedBase:
    """A local directory (if `ref` is one) or a hub id resolved through the Hugging Face cache."""
    local = (root or Path.cwd()) / ref if not Path(ref).is_absolute() else Path(ref)
    if local.is_dir():
        if revision:
            raise MidtrainError.single(
                "--revision applies to hub ids; a local directory has no revisions", file=local, found=revision
            )
        config_path = local / "config.json"
        if not config_path.is_file():
            raise MidtrainError.single(f"not a model directory: no config.json (option {OPTION})", file=local)
        config = _read_config(config_path)
        check_config(config, config_path)
        return ResolvedBase(ref, None, False, config, directory_fingerprint(local))
    if not HUB_ID.match(ref):
        raise MidtrainError.single(
            f"{OPTION}: neither a model directory nor a hub id",
            expected="ORG/NAME or a directory with config.json",
            found=ref,
        )
    config_path = _hub_file(ref, revision, "config.json", cache_only)
    commit = config_path.parent.name
    if not COMMIT.match(commit):
        raise MidtrainError.single(
            "unexpected Hugging Face cache layout (snapshot folder is not a commit)", file=config_path
        )
    config = _read_config(config_path)
    check_config(config, config_path)
    return ResolvedBase(ref, commit, True, config, f"{ref}@{commit}")


def _hub_file(repo: str, revision: str | None, filename: str, cache_only: bool = False) -> Path:
    """One file of a hub model through huggingface_hub (cache first; downloads unless offline)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    shown = f"{repo}@{revision or 'main'}"
    how = (
        f"make it available with `huggingface-cli download {repo}"
        + (f" --revision {revision}" if revision else "")
        + "` on a connected machine (then copy the cache and point HF_HUB_CACHE at it), or pass a local directory to --base"
    )
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=cache_only))
    except RevisionNotFoundError:
        raise MidtrainError.single(
            f"revision {revision!r} of {repo} not found (option --revision)", found=str(revision)
        ) from None
    except RepositoryNotFoundError:
        raise MidtrainError.single(f"model {repo} not found on the hub (option {OPTION})", found=repo) from None
    except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: first)
        raise MidtrainError.single(
            f"{shown} is not in the Hugging Face cache and the hub cannot be reached (offline); {how}"
        ) from None
    except EntryNotFoundError:
        raise MidtrainError.single(f"{shown} has no {filename}: not a transformers model (option {OPTION})") from None
    except OSError as exc:  # network errors, permission problems in the cache
        raise MidtrainError.single(f"cannot fetch {filename} of {shown}: {exc}; {how}") from None


def fetch_base(base: ResolvedBase | None, ref: str, revision: str | None) -> Path:
    """The base's files on this machine: the directory, or the cached snapshot (downloaded if needed)."""
    if base is not None and not base.is_hub:
        return Path(ref)
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]
    try:
        return Path(snapshot_download(ref, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # huggingface_hub raises many types; all mean "not available"
        raise MidtrainError.single(f"cannot fetch {ref}@{revision}: {exc}") from None
