"""The reproduction pipeline: what each DVC stage runs, and `midtrain reproduce`.

`dvc.yaml` (repository root) is fixed and recipe-independent; `params.yaml` says which recipe, at
which scale, with which overrides. Stages:

    plan      params.yaml + recipes/ + registry/  -> plan/ (plan.json, data.json, base.json, midtrain.json, eval.json)
    data      plan/data.json                      -> data/<scale>/
    base      plan/base.json                      -> runs/<recipe>/base/      (tiny: pretrain a stand-in; full: fetch)
    midtrain  plan/midtrain.json + base           -> runs/<recipe>/mid/       (every stage, run and merge)
    evaluate  plan/eval.json + models             -> metrics/eval.json
    report    metrics + logs + plan               -> report/ (summary.md, PNG plots, CSV curves)

Each plan file is separate, so changing one mixture share changes only `midtrain.json` (and what
follows); `data` and `base` stay cached. Inside `midtrain`, each run records its specification and
the fingerprint of the model it started from, and is skipped when both are unchanged; `base` and
`mid` are `persist` outputs so an interrupted stage resumes from its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError
from midtrain.io import atomic_writer, write_json

PARAMS = "params.yaml"


# ---------------------------------------------------------------- params


def read_params(root: Path) -> dict[str, Any]:
    from midtrain.yamlio import load_yaml

    path = root / PARAMS
    data, _ = load_yaml(path)
    if not isinstance(data, dict) or "recipe" not in data:
        raise MidtrainError.single("params.yaml needs at least `recipe:`", file=path)
    data.setdefault("scale", "tiny")
    data.setdefault("seed", 0)
    data.setdefault("overrides", [])
    if not isinstance(data["overrides"], list):
        raise MidtrainError.single("overrides must be a list of KEY=VALUE strings", file=path, found=type(data["overrides"]).__name__)
    return data


def write_params(root: Path, recipe: str, scale: str, seed: int, overrides: list[str]) -> Path:
    from midtrain.yamlio import dump_yaml

    path = root / PARAMS
    text = "# Which recipe the pipeline reproduces (see dvc.yaml). Written by `midtrain reproduce`; edit freely.\n"
    text += dump_yaml({"recipe": recipe, "scale": scale, "seed": seed, "overrides": list(overrides)})
    with atomic_writer(path) as handle:
        handle.write(text)
    return path


# ---------------------------------------------------------------- stages


def stage_plan(root: Path, out: Path) -> Any:
    """Validate the recipe with its overrides, plan it at the scale, write plan/."""
    from pydantic import ValidationError

    from midtrain.catalog import load_catalog
    from midtrain.scale import apply_overrides, plan_recipe, write_plan
    from midtrain.schema.recipe import Recipe
    from midtrain.yamlio import LineMap, problems_from_validation

    params = read_params(root)
    catalog = load_catalog(root)
    recipe = catalog.get(str(params["recipe"]))
    if params["overrides"]:
        raw = apply_overrides(catalog.raw[recipe.id], [str(o) for o in params["overrides"]])
        try:
            recipe = Recipe.model_validate(raw)
        except ValidationError as exc:
            problems = problems_from_validation(exc, root / PARAMS, LineMap())
            for problem in problems:
                problem.message = f"after overrides {params['overrides']}: {problem.message}"
            raise MidtrainError(problems) from None
    plan = plan_recipe(recipe, catalog.registry, str(params["scale"]), int(params["seed"]))
    data_dir = f"data/{params['scale']}" if params["scale"] != "full" else f"data/full-{recipe.id}"
    write_plan(plan, out, data_dir)
    return plan


def stage_data(root: Path, plan_dir: Path) -> None:
    from midtrain.catalog import load_catalog
    from midtrain.data.prepare import PrepareOptions, prepare_sources, prepare_tiny

    spec = json.loads((plan_dir / "data.json").read_text())
    out = root / spec["out"]
    if spec["kind"] == "builtin":
        prepare_tiny(PrepareOptions(out=out, vocab_size=spec["vocab_size"], seed=spec["seed"], progress=True))
        return
    registry = load_catalog(root).registry
    prepare_sources(out, {n: registry.sources[n] for n in spec["sources"]}, spec["tokenizer"], spec.get("revision"), base=root)


def _run_training(spec_path: Path) -> None:
    """One training run, in a child process (torchrun when MIDTRAIN_NPROC > 1)."""
    nproc = int(os.environ.get("MIDTRAIN_NPROC", "1"))
    command = [sys.executable, "-m", "midtrain", "train", str(spec_path)]
    if nproc > 1:
        command += ["--nproc-per-node", str(nproc)]
    status = subprocess.call(command)
    if status:
        raise MidtrainError.single(f"training run failed (exit status {status}); rerun to resume from its last checkpoint", file=spec_path)


def stage_base(root: Path, plan_dir: Path) -> None:
    spec = json.loads((plan_dir / "base.json").read_text())
    if "published" in spec:
        fetch_published(spec["published"]["hub_id"], spec["published"].get("revision"), root / spec["out"] / "model")
        return
    _run_training(plan_dir / "base.json")


def fetch_published(hub_id: str, revision: str | None, out: Path) -> None:
    """Full scale: the published base through `from_pretrained` (hub id + revision, or a local directory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midtrain.io import atomic_dir

    if (out / "config.json").exists():
        return
    try:
        tokenizer = AutoTokenizer.from_pretrained(hub_id, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(hub_id, revision=revision, dtype="auto")
    except OSError as exc:
        raise MidtrainError.single(f"cannot load the published base {hub_id!r} (revision {revision}): {exc}") from None
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _fingerprint(model_dir: Path) -> str:
    """Identity of a model directory: the sha256 of its weight files."""
    digest = hashlib.sha256()
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise MidtrainError.single("model directory has no weights (did its stage finish?)", file=model_dir)
    for file in files:
        with open(file, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def stage_midtrain(root: Path, plan_dir: Path) -> None:
    """Every mid-training run and merge of the plan, in order; unchanged ones are skipped."""
    from midtrain.train.merge import merge_models

    mid = json.loads((plan_dir / "midtrain.json").read_text())
    specs_dir = root / "runs" / mid["recipe"] / "mid" / ".specs"  # inside this stage's output, never in plan/
    specs_dir.mkdir(parents=True, exist_ok=True)
    for item in mid["order"]:
        name = item["name"]
        if item["kind"] == "run":
            spec = mid["runs"][name]
            out = root / spec["out"]
            key = {"spec": spec, "init": _fingerprint(root / spec["init"]["path"])}
            stamp = out / "done.json"
            if stamp.exists() and json.loads(stamp.read_text()) == key and (out / "model" / "config.json").exists():
                print(f"{name}: unchanged, skipped", flush=True)
                continue
            stamp.unlink(missing_ok=True)
            spec_path = specs_dir / f"{name}.json"
            write_json(spec_path, spec)
            _run_training(spec_path)
            write_json(stamp, key)
        else:
            merge = mid["merges"][name]
            if merge["source_of"]:
                continue  # an EMA/Polyak average written by its run
            out = root / merge["out"]
            key = {"merge": merge, "inputs": [_fingerprint(root / i) for i in merge["inputs"]]}
            stamp = out.parent / f".{out.name}.done.json"
            if stamp.exists() and json.loads(stamp.read_text()) == key and (out / "config.json").exists():
                print(f"{name}: unchanged, skipped", flush=True)
                continue
            merge_models([root / i for i in merge["inputs"]], out, merge["weights"])
            write_json(stamp, key)
            print(f"{name}: merged {len(merge['inputs'])} models ({merge['method']})", flush=True)


def stage_evaluate(root: Path, plan_dir: Path, out: Path) -> dict[str, Any]:
    from midtrain.evaluate import evaluate

    config = json.loads((plan_dir / "eval.json").read_text())
    results = evaluate(config, root)
    write_json(out, {k: v for k, v in results.items() if k != "position_curve"})
    write_json(out.with_name("position_curve.json"), results["position_curve"])
    return results


# ---------------------------------------------------------------- reproduce


def check_repository(root: Path) -> None:
    """A git repository with at least one commit and an initialised DVC project, or a clear message."""
    git = shutil.which("git")
    if git is None:
        raise MidtrainError.single("git is not installed; DVC pipelines need a git repository")
    inside = subprocess.run([git, "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    if inside.returncode != 0:
        raise MidtrainError.single(f"{root} is not a git repository; run `git init && git add -A && git commit -m init` first")
    head = subprocess.run([git, "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        raise MidtrainError.single("the git repository has no commit yet; DVC experiments need one: `git add -A && git commit -m init`")
    if not (root / ".dvc").is_dir():
        raise MidtrainError.single(f"{root} is not a DVC project; run `dvc init` (and commit .dvc/) first")
    if not (root / "dvc.yaml").exists():
        raise MidtrainError.single("no dvc.yaml here; copy the one from the midtrain repository (or run from its root)", file=root / "dvc.yaml")


def dvc_command(root: Path, use_exp: bool, name: str | None, force: bool = False) -> list[str]:
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    if use_exp:
        command = [dvc, "exp", "run"]
        if name:
            command += ["--name", name]
    else:
        command = [dvc, "repro"]
    if force:
        command.append("--force")
    return command


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = ["held-out loss        base     final    change"]
    for domain, values in metrics["loss"].items():
        change = values["final"] / values["base"] - 1
        lines.append(f"  {domain:<10} {values['base']:>9.4f} {values['final']:>9.4f} {change:>+8.1%}")
    position = metrics["position_loss"]
    if position["beyond"].get("base") is not None:
        lines.append("beyond vs in-context loss (long documents)")
        for which in ("base", "final"):
            ratio = position["beyond"][which] / position["in_context"][which] - 1
            lines.append(f"  {which:<10} in {position['in_context'][which]:.4f} · beyond {position['beyond'][which]:.4f} ({ratio:+.1%})")
    lines.append("math exact match     base {base:.1%} → final {final:.1%}".format(**metrics["math_exact_match"]))
    for length, values in metrics["retrieval"].items():
        lines.append(f"retrieval @ {length:>5} tokens   base {values['base']:.0%} → final {values['final']:.0%}")
    return lines
