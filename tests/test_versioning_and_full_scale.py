"""Users' own data under DVC (local-directory remote), and the full-scale path on local directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from midtrain.data.sources import iter_documents
from midtrain.errors import MidtrainError
from midtrain.schema.registry import DataSource

BIN = Path(sys.executable).parent


def sh(args: list[str], cwd: Path) -> str:
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


def test_own_corpus_with_dvc_add_push_pull(tmp_path: Path) -> None:
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    corpus = repo / "corpora" / "my_math.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps({"text": f"Problem {i}: 2 + {i} = {2 + i}"}) + "\n" for i in range(20)))
    sh(["dvc", "add", "corpora/my_math.jsonl"], repo)
    sh(["dvc", "remote", "add", "-d", "storage", str(remote)], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "corpus"], repo)
    sh(["dvc", "push"], repo)
    source = DataSource(description="mine", category="math", files=["corpora/my_math.jsonl"], builtin="math")
    assert len(list(iter_documents(source, "my-math", base=repo))) == 20

    # A fresh clone has only the pointer: a clear message, then `dvc pull` brings the data back.
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    with pytest.raises(MidtrainError, match="tracked by DVC but not present here; run `dvc pull"):
        list(iter_documents(source, "my-math", base=clone))
    sh(["dvc", "pull"], clone)
    assert list(iter_documents(source, "my-math", base=clone)) == list(iter_documents(source, "my-math", base=repo))


def test_full_scale_plan_resolves_hub_ids_on_local_directories(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full-scale plan loads the base with from_pretrained and data with load_dataset by id; here the
    ids are local directories (a saved model, a dataset repository with named subsets)."""
    from midtrain.catalog import load_catalog
    from midtrain.pipeline import fetch_pretrained
    from midtrain.plan.planner import plan_recipe
    from midtrain.train.config import RunSpec
    from midtrain.train.loop import train
    from tests.train.conftest import make_spec

    # 1. a "published" base: a small model saved in HF format
    base_run = make_spec(prepared, tmp_path / "published", steps=2)
    train(RunSpec.model_validate(base_run), progress=False)
    published = tmp_path / "published" / "model"
    # 2. a "hub" dataset with subsets, like allenai/dolmino-mix-1124
    hub = tmp_path / "hub-dataset"
    for subset in ("dclm", "math"):
        (hub / subset).mkdir(parents=True)
        (hub / subset / "part-0.jsonl").write_text(
            "".join(json.dumps({"text": f"{subset} document {i} " * 30}) + "\n" for i in range(30))
        )
    (hub / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(
            f"- config_name: {s}\n  data_files:\n  - split: train\n    path: {s}/*.jsonl\n" for s in ("dclm", "math")
        )
        + "---\n"
    )
    # 3. a registry whose ids point there
    root = tmp_path / "project"
    shutil.copytree(Path(__file__).resolve().parent.parent / "recipes", root / "recipes")
    shutil.copytree(Path(__file__).resolve().parent.parent / "registry", root / "registry")
    sources = (
        (root / "registry" / "sources.yaml").read_text().replace("hub_id: allenai/dolmino-mix-1124", f"hub_id: {hub}")
    )
    (root / "registry" / "sources.yaml").write_text(sources)
    models = (
        (root / "registry" / "models.yaml")
        .read_text()
        .replace("hub_id: allenai/OLMo-2-1124-7B", f"hub_id: {published}")
    )
    (root / "registry" / "models.yaml").write_text(models)
    monkeypatch.setenv("MIDTRAIN_HOME", str(root))
    catalog = load_catalog(root)
    recipe = catalog.get("olmo-2-1124-7b")
    plan = plan_recipe(recipe, catalog.registry, "full")
    assert plan.base.model.path == str(published) and plan.summary.compute["gpu_hours"]["H100"] > 1000
    run = next(iter(plan.mid.runs.values())).model_dump(mode="json")
    assert run["init"]["path"] == str(published) and run["strategy"] == "fsdp"
    assert (
        run["global_batch"] * run["sequence_length"] == 1024 * 4096
    )  # the published batch, in tokens, at the base's own context

    fetched = fetch_pretrained(str(published), None, tmp_path)
    assert (fetched / "config.json").exists()

    from midtrain.data.prepare import prepare_sources

    manifest = prepare_sources(
        tmp_path / "data",
        {n: catalog.registry.sources[n] for n in ("dolmino-dclm", "dolmino-math")},
        str(published),
        progress=False,
    )
    assert manifest["streams"]["dolmino-math.train"]["documents"] == 30

    # 4. two steps of the full-scale run specification, shrunk, from the fetched base and the hub data
    spec = dict(
        run,
        out=str(tmp_path / "full-run"),
        tokenizer=str(published),
        data=str(tmp_path / "data"),
        streams={"dolmino-dclm.train": 0.5, "dolmino-math.train": 0.5},
        sequence_length=32,
        global_batch=2,
        micro_batch=1,
        steps=2,
        precision="fp32",
        strategy="auto",
        activation_checkpointing=False,
        max_position_embeddings=None,
        init={"path": str(fetched)},
        checkpoint_every=1,
        threads=1,
    )
    summary = train(RunSpec.model_validate(spec), progress=False)
    assert summary["steps"] == 2
