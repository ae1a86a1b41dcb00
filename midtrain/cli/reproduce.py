"""`midtrain plan`, `midtrain reproduce`, and `midtrain stage ...` (the commands dvc.yaml runs)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any, Optional

import typer

from midtrain.cli import app, guarded
from midtrain.cli.browse import _complete_recipe
from midtrain.errors import MidtrainError

stage_app = typer.Typer(help="The pipeline's stages, as dvc.yaml runs them (read params.yaml and plan/).", no_args_is_help=True)
app.add_typer(stage_app, name="stage")


def _planned(recipe_id: str, scale: str, overrides: list[str], seed: int) -> Any:
    from pydantic import ValidationError

    from midtrain.catalog import load_catalog
    from midtrain.scale import apply_overrides, plan_recipe
    from midtrain.schema.recipe import Recipe
    from midtrain.yamlio import LineMap, problems_from_validation

    catalog = load_catalog()
    recipe = catalog.get(recipe_id)
    if overrides:
        try:
            recipe = Recipe.model_validate(apply_overrides(catalog.raw[recipe.id], overrides))
        except ValidationError as exc:
            raise MidtrainError(problems_from_validation(exc, None, LineMap())) from None
    return plan_recipe(recipe, catalog.registry, scale, seed)


@app.command()
@guarded
def plan(
    recipe_id: str = typer.Argument(..., help="Recipe id.", autocompletion=_complete_recipe),
    scale: str = typer.Option("tiny", "--scale", "-s", help="tiny, small or full (registry/scales.yaml)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe field, e.g. stages.anneal.tokens=20B (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the stand-in base and data orders."),
    write: Optional[Path] = typer.Option(None, "--write", help="Also write plan.json and run specifications into this directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Print the concrete plan of a recipe at a scale.

    Model, tokens and steps per stage, LR at each stage's start and end, context, RoPE, mixture with
    the actual data, runs and merges; at full scale also the compute it costs.

    [bold]Examples[/bold]

      midtrain plan olmo-2-1124-7b --scale tiny
      midtrain plan qwen3-8b --scale full --json | jq .compute
      midtrain plan olmo-2-1124-7b --set stages.anneal.mixture.components[dolmino-math].share=0.3
    """
    result = _planned(recipe_id, scale, list(overrides or []), seed)
    if write is not None:
        from midtrain.scale import write_plan

        write_plan(result, write, f"data/{scale}")
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    _print_plan(result)


def _lr(value: float) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _print_plan(result: Any) -> None:
    from rich import box
    from rich.table import Table

    from midtrain.cli.render import console
    from midtrain.units import human_count

    out = console()
    model = result.model
    out.print(f"[bold]{result.recipe}[/bold] at [bold]{result.scale}[/bold] scale")
    if result.scale == "full" or "dims" not in model:
        out.print(f"model   {model.get('architecture')} from {model.get('hub_id')}@{model.get('revision') or 'main'} ({human_count(model.get('parameters'))} parameters)")
    else:
        dims = model["dims"]
        out.print(f"model   {model['family']} stand-in: {dims['num_hidden_layers']} layers × {dims['hidden_size']}, "
                  f"{dims['num_attention_heads']} heads ({dims['num_key_value_heads']} KV), vocab {model['vocab_size']}, "
                  f"context {model['base_context']} → {model['max_context']}, RoPE θ {model['rope_theta']:,.0f}")
        base = result.base
        out.print(f"base    pretrained here: {base['steps']} steps, {human_count(base['tokens'])} tokens on "
                  + ", ".join(f"{k.split('.')[0]} {v:.0%}" for k, v in base["mix"].items()) + f"; LR ends at {_lr(base['lr_end'])}")
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for column in ("stage", "runs", "tokens/run", "steps", "context", "batch", "LR start → end", "schedule", "RoPE"):
        table.add_column(column, justify="right" if column in ("runs", "tokens/run", "steps", "context", "batch") else "left")
    for stage in result.stages:
        table.add_row(stage.name, str(len(stage.runs)), human_count(stage.tokens_per_run), f"{stage.steps:,}", f"{stage.sequence_length:,}",
                      f"{stage.global_batch:,}", f"{_lr(stage.lr_start)} → {_lr(stage.lr_end)}", stage.schedule, stage.rope)
    out.print(table)
    mixture = Table(box=box.SIMPLE_HEAD, header_style="bold", title="mixtures")
    mixture.add_column("stage")
    mixture.add_column("source")
    mixture.add_column("share", justify="right")
    mixture.add_column("data", style="dim")
    for stage in result.stages:
        for index, (name, item) in enumerate(stage.mixture.items()):
            mixture.add_row(stage.name if index == 0 else "", name, f"{item['share']:.1%}", item["stream"])
    out.print(mixture)
    for merge in result.merges:
        out.print(f"merge   {merge.name}: {merge.method} of {', '.join(merge.inputs)}" + (f" (weights {merge.weights})" if merge.weights else ""))
    out.print(f"final   {result.final}")
    if result.compute:
        c = result.compute
        out.print(f"compute {c['flops']:.3g} FLOPs ({c['formula']}); at {c['mfu_assumed']:.0%} MFU ≈ "
                  f"{c['gpu_hours']['H100']:,.0f} H100-hours ≈ {c['gpu_hours']['H200']:,.0f} H200-hours")
    for note in result.notes:
        out.print(f"[yellow]note[/yellow]    {note}")


@app.command()
@guarded
def reproduce(
    recipe_id: str = typer.Argument(..., help="Recipe id.", autocompletion=_complete_recipe),
    scale: str = typer.Option("tiny", "--scale", "-s", help="tiny, small or full."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe field (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the stand-in base and data orders."),
    exp: bool = typer.Option(True, "--exp/--repro", help="Run as a DVC experiment (default) or as a plain `dvc repro`."),
    name: Optional[str] = typer.Option(None, "--name", help="Experiment name."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="Processes per training run (torchrun)."),
) -> None:
    """Reproduce a recipe end to end through the DVC pipeline in dvc.yaml.

    data → tokenizer → base → mid-training stages → merges → evaluation → report. Writes params.yaml and runs
    `dvc exp run` (or `dvc repro`); rerunning after a failure or Ctrl-C resumes, finished stages are
    not redone.

    [bold]Examples[/bold]

      midtrain reproduce olmo-2-1124-7b
      midtrain reproduce qwen3-8b --scale tiny --name qwen3-tiny
      midtrain reproduce olmo-2-1124-7b --set stages.anneal.mixture.components[dolmino-math].share=0.4 --set stages.anneal.mixture.components[dolmino-dclm].share=0.28
      dvc exp show ; dvc metrics diff ; dvc plots show
    """
    import os
    import sys

    from midtrain.pipeline import check_repository, dvc_command, summary_lines, write_params

    root = Path.cwd()
    check_repository(root)
    _planned(recipe_id, scale, list(overrides or []), seed)  # fail fast: unknown id, bad override, scale too small
    write_params(root, recipe_id, scale, seed, list(overrides or []))
    command = dvc_command(root, exp, name)
    env = dict(os.environ, MIDTRAIN_NPROC=str(nproc_per_node))
    typer.echo("running: " + " ".join(command[1:] if command[0].endswith("dvc") else command), err=True)
    try:
        status = subprocess.call(command, cwd=root, env=env)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume; finished stages are not redone", err=True)
        raise typer.Exit(130) from None
    if status:
        typer.echo(f"the pipeline failed (exit status {status}); DVC printed which stage. Fix it and rerun: finished stages are cached, "
                   "training resumes from its last checkpoint", err=True)
        raise typer.Exit(status)
    metrics_path = root / "metrics" / "eval.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        typer.echo("\n".join(summary_lines(metrics)))
        typer.echo(f"report: {root / 'report' / 'summary.md'}  ·  compare: dvc exp show / dvc metrics diff / dvc plots show", err=True)
    sys.stdout.flush()


# ---------------------------------------------------------------- stages run by dvc.yaml


@stage_app.command("plan")
@guarded
def stage_plan(out: Path = typer.Option(Path("plan"), "--out")) -> None:
    """Plan params.yaml's recipe at its scale into plan/."""
    from midtrain.pipeline import stage_plan as run

    result = run(Path.cwd(), out)
    _print_plan(result)


@stage_app.command("data")
@guarded
def stage_data(plan_dir: Path = typer.Option(Path("plan"), "--plan")) -> None:
    """Prepare the data the plan needs."""
    from midtrain.pipeline import stage_data as run

    run(Path.cwd(), plan_dir)


@stage_app.command("base")
@guarded
def stage_base(plan_dir: Path = typer.Option(Path("plan"), "--plan")) -> None:
    """Pretrain the stand-in base (tiny/small) or fetch the published one (full)."""
    from midtrain.pipeline import stage_base as run

    run(Path.cwd(), plan_dir)


@stage_app.command("midtrain")
@guarded
def stage_midtrain(plan_dir: Path = typer.Option(Path("plan"), "--plan")) -> None:
    """Every mid-training run and merge of the plan (unchanged ones are skipped)."""
    from midtrain.pipeline import stage_midtrain as run

    run(Path.cwd(), plan_dir)


@stage_app.command("evaluate")
@guarded
def stage_evaluate(plan_dir: Path = typer.Option(Path("plan"), "--plan"), out: Path = typer.Option(Path("metrics/eval.json"), "--out")) -> None:
    """Evaluate the base and the final model into metrics/eval.json."""
    from midtrain.pipeline import stage_evaluate as run, summary_lines

    metrics = run(Path.cwd(), plan_dir, out)
    typer.echo("\n".join(summary_lines(metrics)))


@stage_app.command("report")
@guarded
def stage_report(
    plan_dir: Path = typer.Option(Path("plan"), "--plan"),
    metrics: Path = typer.Option(Path("metrics/eval.json"), "--metrics"),
    out: Path = typer.Option(Path("report"), "--out"),
) -> None:
    """Write report/: summary.md, PNG plots and CSV curves."""
    from midtrain.report import build_report

    build_report(Path.cwd(), plan_dir / "plan.json", metrics, out)
    typer.echo(f"report written to {out / 'summary.md'}")
