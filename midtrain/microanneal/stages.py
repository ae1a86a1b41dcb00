"""What each stage of microanneal/dvc.yaml runs (working directory: microanneal/).

plan        params.yaml + ../recipes + ../registry -> plan/ (design, data, base, score, template)
data        plan/data.json                      -> data/<key>/ (+ math-noisy and registry streams)
base        plan/base.json + data               -> runs/<run>/base/ (stand-in pretrained, or fetched)
units       plan/design.json + data + base      -> unit-specs/<unit>.json (RunSpec + stream and base identity)
anneal@U    unit-specs/U.json + base            -> units/U/ (persist: a killed unit resumes)
score@U     plan/score.json + units/U           -> scores/U.json
report      plan/design.json + scores/          -> metrics/microanneal.json, metrics/deltas.json, report/
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from midtrain.errors import MidtrainError
from midtrain.io import write_json

PARAMS = "params.yaml"


def stage_plan(here: Path) -> Any:
    from midtrain.catalog import load_catalog
    from midtrain.microanneal.design import read_request
    from midtrain.microanneal.plan import write_design

    request = read_request(here / PARAMS)
    return write_design(here, here.parent, request, load_catalog(here.parent))


def stage_data(here: Path) -> None:
    from midtrain.data.prepare import PrepareOptions, prepare_stand_in, prepare_tiny
    from midtrain.microanneal.data import add_streams
    from midtrain.microanneal.plan import MicroData, read_model
    from midtrain.plan.contract import BuiltinData, StandInData

    micro = read_model(here / "plan" / "data.json", MicroData)
    spec = micro.spec
    out = here / spec.out
    if isinstance(spec, BuiltinData):
        prepare_tiny(PrepareOptions(out=out, vocab_size=spec.vocab_size, seed=spec.seed, progress=True))
    elif isinstance(spec, StandInData):
        prepare_stand_in(
            PrepareOptions(out=out, seed=spec.seed, progress=True), spec.tokenizer.path, spec.tokenizer.revision
        )
    else:
        raise MidtrainError.single(
            "a microanneal plan uses built-in or stand-in data", file=here / "plan" / "data.json"
        )
    add_streams(out, micro.extra.noisy, micro.extra.sources, here.parent, spec.seed)


def stage_base(here: Path) -> None:
    from midtrain.pipeline import stage_base as run

    run(here, here / "plan")


def stage_units(here: Path) -> list[str]:
    """One file per unit: its RunSpec and the identity of what it reads, so DVC reruns a unit exactly
    when its own streams or the base change (adding a candidate's data leaves the others cached)."""
    from midtrain.data.packing import read_manifest
    from midtrain.microanneal.plan import DesignPlan, UnitTemplate, read_model, unit_spec
    from midtrain.pipeline import _weights_fingerprint

    summary = read_model(here / "plan" / "design.json", DesignPlan)
    template = read_model(here / "plan" / "template.json", UnitTemplate)
    data = here / template.spec.data
    manifest = read_manifest(data / "shards")
    base = template.base_fingerprint or _weights_fingerprint(here / template.spec.init.path)
    for unit in summary.units:
        spec = unit_spec(template, summary, unit)
        missing = [s for s in spec.streams if s not in manifest["streams"]]
        if missing:
            raise MidtrainError.single(
                f"unit {unit} reads streams the data does not have",
                file=data / "shards" / "manifest.json",
                found=", ".join(missing),
            )
        streams = {s: manifest["streams"][s]["sha256"]["bin"] for s in sorted(spec.streams)}
        record = {
            "spec": spec.model_dump(mode="json"),
            "streams": streams,
            "base": base,
            "tokenizer": manifest["tokenizer"],
        }
        write_json(here / "unit-specs" / f"{unit}.json", record)
    return summary.units


def stage_anneal(here: Path, unit: str) -> None:
    from midtrain.pipeline import _run_training

    record = json.loads((here / "unit-specs" / f"{unit}.json").read_text(encoding="utf-8"))
    out = here / record["spec"]["out"]
    trained_from = out / "unit.json"
    if out.exists() and (not trained_from.exists() or json.loads(trained_from.read_text(encoding="utf-8")) != record):
        # the output persists so that a killed unit resumes; a unit whose streams or base changed starts over
        shutil.rmtree(out)
    write_json(trained_from, record)
    spec_path = out / ".spec.json"
    write_json(spec_path, record["spec"])
    _run_training(spec_path, here)


def stage_score(here: Path, unit: str) -> dict[str, Any]:
    import torch

    from midtrain.microanneal.plan import ScoreSpec, read_model
    from midtrain.microanneal.score import score_unit
    from midtrain.train.distributed import threads_per_process

    torch.set_num_threads(threads_per_process(None, 1))
    spec = read_model(here / "plan" / "score.json", ScoreSpec)
    result = score_unit(here, spec, unit)
    write_json(here / "scores" / f"{unit}.json", result)
    return result


def stage_report(here: Path) -> dict[str, Any]:
    from midtrain.microanneal.plan import DesignPlan, read_model
    from midtrain.microanneal.report import write_report
    from midtrain.microanneal.stats import summarize

    design = read_model(here / "plan" / "design.json", DesignPlan)
    scores = []
    for unit in design.units:
        path = here / "scores" / f"{unit}.json"
        if not path.exists():
            raise MidtrainError.single(f"unit {unit} has no score yet (run its score stage)", file=path)
        scores.append(json.loads(path.read_text(encoding="utf-8")))
    result = summarize(scores, {name: arm.sources for name, arm in design.arms.items()})
    flat = {
        name: {
            metric: round(block["relative"], 6)
            for metric, block in arm["loss"].items()
            if block["relative"] is not None
        }
        for name, arm in result["arms"].items()
    }
    write_json(here / "metrics" / "deltas.json", flat)
    write_json(here / "metrics" / "microanneal.json", result)
    write_report(result, design.model_dump(mode="json"), here / "report")
    return result
