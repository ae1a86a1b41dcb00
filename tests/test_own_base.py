"""Mid-train your own base: a random model and tokenizer in a Hugging Face cache under a hub id,
resolved offline exactly as after a download, through the real DVC pipeline, lm-eval included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub import install_in_cache, save_random_model

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HUB_ID = "test-org/tiny-llama"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    save_random_model(root / "llama", context=64, theta=10_000.0)
    cache = root / "cache"
    install_in_cache(root / "llama", cache, HUB_ID)
    install_in_cache(root / "llama", cache, "allenai/OLMo-2-1124-7B")  # the published id, for the full-scale path
    return cache


def run(
    args: list[str], cwd: Path, cache: Path, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
        HF_HUB_CACHE=str(cache),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        DVC_NO_ANALYTICS="1",
    )
    proc = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, env=env, timeout=900, input=stdin, start_new_session=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_project(root: Path, cache: Path) -> Path:
    root.mkdir()
    for name in ("recipes", "registry"):
        shutil.copytree(REPO / name, root / name)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, root / name)
    run(["git", "init", "-q"], root, cache)
    run(["dvc", "init", "-q"], root, cache)
    run(["git", "add", "-A"], root, cache)
    run(["git", "commit", "-qm", "init"], root, cache)
    return root


def _models(root: Path) -> list[Path]:
    return sorted(
        p.parent
        for p in (root / "runs").rglob("config.json")
        if p.parent.name.startswith("model") or p.parent.name == "soup"
    )


@pytest.mark.slow
def test_olmo2_on_own_hub_base_end_to_end(hub_cache: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    project = make_project(tmp_path / "project", hub_cache)
    command = [
        "midtrain",
        "reproduce",
        "olmo-2-1124-7b",
        "--base",
        HUB_ID,
        "--base-peak-lr",
        "3e-3",
        "--tokens",
        "60K",
        "--stand-in-data",
        "--eval-limit",
        "8",
        "--repro",
    ]
    first = run(command, project, hub_cache)
    params = (project / "params.yaml").read_text()
    commit = (hub_cache / "models--test-org--tiny-llama" / "refs" / "main").read_text()
    assert f"revision: {commit}" in params  # pinned, so DVC reruns when the base changes
    plan = json.loads((project / "plan" / "plan.json").read_text())
    layout = plan["layout"]
    assert plan["base"]["revision"] == commit and plan["model"]["base_context"] == 64
    # data: the base's own tokenizer, so uint16 shards of a 512-token vocabulary
    data = project / "data" / layout["data"]
    manifest = json.loads((data / "shards" / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == 512 and manifest["streams"]["math.train"]["dtype"] == "uint16"
    base_vocab = json.loads(
        (hub_cache / "models--test-org--tiny-llama" / "snapshots" / commit / "tokenizer.json").read_text()
    )["model"]["vocab"]
    assert json.loads((data / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"] == base_vocab
    # three data-order runs and their soup, each loadable with the base's vocabulary
    mid = project / "runs" / layout["run"] / "mid"
    assert {p.name for p in mid.iterdir() if not p.name.startswith(".")} >= {"anneal-0", "anneal-1", "anneal-2", "soup"}
    models = _models(project)
    assert len(models) == 4
    for model_dir in models:
        model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=False)
        assert model.get_input_embeddings().weight.shape[0] == 512 and model.config.use_cache
    # lm-eval on the shipped local tasks, base and final; held-out loss per domain
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    assert set(metrics["loss"]) == {"prose", "code", "math", "qa"}
    assert set(metrics["benchmarks"]["midtrain_math"]["acc,none"]) == {"base", "final"}
    assert any(t.startswith("midtrain_retrieval_") for t in metrics["benchmarks"])
    assert "lm-eval midtrain_math" in first.stdout and (project / "report" / "benchmarks.png").exists()
    # nothing to do the second time
    again = run(["dvc", "repro"], project, hub_cache)
    assert "Running stage" not in again.stdout


@pytest.mark.slow
def test_qwen3_on_own_base_extends_its_own_context_and_theta(hub_cache: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", hub_cache)
    run(
        [
            "midtrain",
            "reproduce",
            "qwen3-8b",
            "--base",
            HUB_ID,
            "--base-peak-lr",
            "3e-3",
            "--tokens",
            "120K",
            "--min-steps",
            "6",
            "--stand-in-data",
            "--eval-limit",
            "4",
            "--eval-tasks",
            "midtrain_math",
            "--repro",
        ],
        project,
        hub_cache,
    )
    plan = json.loads((project / "plan" / "plan.json").read_text())
    final = project / "runs" / plan["layout"]["run"] / "mid" / "long-context" / "model" / "config.json"
    config = json.loads(final.read_text())
    assert config["max_position_embeddings"] == 8 * 64  # Qwen3's 4K -> 32K, applied to the base's own 64
    assert config["rope_parameters"]["rope_theta"] == pytest.approx(100 * 10_000)  # 10K -> 1M, from the base's own θ
    assert config["use_cache"] is True


@pytest.mark.slow
def test_full_scale_runs_the_published_id_with_two_gloo_processes(hub_cache: Path, tmp_path: Path) -> None:
    """The published hub id resolves to a small random model in the offline cache; tokens capped."""
    project = make_project(tmp_path / "project", hub_cache)
    out = run(
        [
            "midtrain",
            "reproduce",
            "olmo-2-1124-7b",
            "--scale",
            "full",
            "--tokens",
            "12K",
            "--min-steps",
            "3",
            "--stand-in-data",
            "--eval-limit",
            "4",
            "--eval-tasks",
            "midtrain_math",
            "--nproc-per-node",
            "2",
            "--repro",
        ],
        project,
        hub_cache,
    )
    plan = json.loads((project / "plan" / "plan.json").read_text())
    assert plan["base"]["model"] == "allenai/OLMo-2-1124-7B" and plan["base"]["peak_lr"] == pytest.approx(3e-4)
    spec = json.loads((project / "plan" / "midtrain.json").read_text())["runs"]["anneal-0"]
    assert spec["strategy"] == "fsdp" and spec["precision"] == "auto" and spec["activation_checkpointing"]
    summary = json.loads((project / "runs" / plan["layout"]["run"] / "mid" / "anneal-0" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["strategy"] == "fsdp"
    resolved = json.loads((project / "runs" / plan["layout"]["run"] / "mid" / "anneal-0" / "resolved.json").read_text())
    assert resolved["precision"]["value"] in ("fp32", "bf16") and resolved["precision"]["reason"]
    assert "lm-eval midtrain_math" in out.stdout


def _plan(cwd: Path, cache: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run(["midtrain", "plan", *args], cwd, cache, stdin=stdin, check=False)


def _refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


@pytest.mark.slow
def test_own_base_bad_input(hub_cache: Path, tmp_path: Path) -> None:
    cwd = tmp_path
    _refused(
        _plan(cwd, hub_cache, "olmo-2-1124-7b", "--base", "nobody/missing", "--base-peak-lr", "1e-3", "--tokens", "1M"),
        "nobody/missing@main",
        "not in the Hugging Face cache",
        "huggingface-cli download",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(
        _plan(cwd, hub_cache, "olmo-2-1124-7b", "--base", str(empty), "--base-peak-lr", "1e-3", "--tokens", "1M"),
        "no config.json",
        "--base",
    )
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"], "max_position_embeddings": 512})
    )
    _refused(
        _plan(cwd, hub_cache, "olmo-2-1124-7b", "--base", str(bert), "--base-peak-lr", "1e-3", "--tokens", "1M"),
        "not a causal language model",
    )
    gpt2 = save_random_model(tmp_path / "gpt2", model_type="gpt2", context=64)
    _refused(
        _plan(cwd, hub_cache, "qwen3-8b", "--base", str(gpt2), "--base-peak-lr", "1e-3", "--tokens", "1M"),
        "no rotary position embeddings",
        "--base",
    )
    long_base = save_random_model(tmp_path / "long", context=65_536)
    _refused(
        _plan(cwd, hub_cache, "qwen3-8b", "--base", str(long_base), "--base-peak-lr", "1e-3", "--tokens", "1M"),
        "already handles 65,536 tokens",
        "--context",
    )
    _refused(
        _plan(cwd, hub_cache, "olmo-2-1124-7b", "--base", HUB_ID, "--base-peak-lr", "1e-3", "--tokens", "500"),
        "fewer than 20 steps",
        "--tokens",
    )
    _refused(_plan(cwd, hub_cache, "olmo-2-1124-7b", "--base", HUB_ID, "--tokens", "1M"), "--base-peak-lr")
    _refused(_plan(cwd, hub_cache, "olmo-2-1124-7b", "--tokens", "1M"), "go with --base")
    ok = _plan(cwd, hub_cache, "olmo-2-1124-7b", "--base", HUB_ID, "--base-peak-lr", "3e-3", "--tokens", "1M", "--json")
    assert ok.returncode == 0, ok.stderr
    plan = json.loads(ok.stdout)
    assert (
        plan["base"]["revision"] and len(plan["base"]["revision"]) == 40 and plan["stages"][0]["lr_start"] is not None
    )
    assert any("tokens per step instead of" in note for note in plan["notes"])


def test_a_model_folder_asking_to_run_its_own_code_is_refused_and_never_run(hub_cache: Path, tmp_path: Path) -> None:
    folder = tmp_path / "remote-code"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil_llama",
                "architectures": ["EvilForCausalLM"],
                "max_position_embeddings": 64,
                "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"},
            }
        )
    )
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('executed')\n")
    proc = _plan(
        tmp_path,
        hub_cache,
        "olmo-2-1124-7b",
        "--base",
        str(folder),
        "--base-peak-lr",
        "1e-3",
        "--tokens",
        "1M",
        stdin="y\ny\ny\n",
    )
    _refused(proc, "auto_map", "never")
    assert not marker.exists()
    from midtrain.errors import MidtrainError
    from midtrain.train.config import Pretrained, RunSpec
    from midtrain.train.model import model_config

    spec = RunSpec.model_validate(
        {
            "name": "x",
            "out": str(tmp_path / "o"),
            "init": Pretrained(path=str(folder)).model_dump(),
            "tokenizer": str(tmp_path),
            "data": str(tmp_path),
            "streams": {"a": 1.0},
            "sequence_length": 8,
            "global_batch": 1,
            "micro_batch": 1,
            "steps": 1,
            "schedule": {"type": "constant", "lr": 1e-3},
        }
    )
    with pytest.raises(MidtrainError):
        model_config(spec)  # the trainer's own loading path refuses too (trust_remote_code=False), without a prompt
    assert not marker.exists()
