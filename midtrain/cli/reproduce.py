"""`midtrain plan`, `midtrain reproduce`, and `midtrain stage ...` (the commands dvc.yaml runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer

from midtrain.cli import app, guarded
from midtrain.cli.browse import _complete_recipe
from midtrain.errors import MidtrainError

stage_app = typer.Typer(help="The pipeline's stages, as dvc.yaml runs them (read params.yaml and plan/).", no_args_is_help=True)
app.add_typer(stage_app, name="stage")


@stage_app.callback()
def _stages() -> None:
    """Third-party noise goes to logs/third-party.log; midtrain's own output stays on the terminal."""
    from midtrain.quiet import quiet_third_party

    quiet_third_party(Path("logs"))


BASE_HELP = "Your base model: a Hugging Face hub id (resolved through the HF cache, pinned to a commit) or a local directory."


def _request(recipe_id: str, scale: str, overrides: list[str] | None, seed: int, base: str | None, revision: str | None,
             base_peak_lr: float | None, tokens: str | None, context: int | None, stand_in_data: bool, min_steps: int | None,
             eval_tasks: str | None, eval_include: list[Path] | None, eval_limit: int | None) -> Any:
    """The CLI options as a validated PlanRequest (the same object params.yaml holds)."""
    from pydantic import ValidationError

    from midtrain.plan.request import EvalChoice, OwnBase, PlanRequest

    own = None
    if scale == "full" and base is None and (tokens or context or stand_in_data or base_peak_lr or revision):
        own = {"model": None}
    if base is not None or own is not None:
        own = {"model": base, "requested_revision": revision, "peak_lr": base_peak_lr, "tokens": tokens, "context": context,
               "stand_in_data": stand_in_data, **({"min_steps": min_steps} if min_steps else {})}
    elif stand_in_data or base_peak_lr or tokens or context or revision:
        raise MidtrainError.single("--base-peak-lr, --tokens, --context, --revision and --stand-in-data go with --base (or --scale full)",
                                   expected="--base HUB_ID|DIR")
    options = {"base": "--base, --base-peak-lr, --tokens, --context", "recipe": "RECIPE_ID", "eval": "--eval-tasks / --eval-include",
               "seed": "--seed", "scale": "--scale"}
    try:
        choice = EvalChoice(tasks=[t.strip() for t in eval_tasks.split(",") if t.strip()] if eval_tasks else None,
                            include=[str(p) for p in eval_include or []], limit=eval_limit)
        return PlanRequest(recipe=_recipe_id(recipe_id), scale=scale, seed=seed, overrides=list(overrides or []), base=OwnBase(**own) if own else None, eval=choice)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise MidtrainError.single(f"{options.get(field, field)}: {err['msg']}", found=str(err.get("input"))[:80]) from None


def _recipe_id(text: str) -> str:
    """Recipe ids are ids, never paths: only `recipe.id` is ever written to params.yaml or used in a path."""
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,79}", text):
        raise MidtrainError.single("RECIPE_ID must be a recipe id (`midtrain list` shows them), not a path",
                                   expected="lowercase letters, digits, '.', '_' and '-', e.g. olmo-2-1124-7b", found=text[:120])
    return text


def _planned(request: Any, resolve: bool) -> Any:
    from midtrain.plan.api import make_plan, pin_base

    if resolve and request.base is not None and request.base.model:
        request = pin_base(request, Path.cwd())
    return request, make_plan(request, Path.cwd() if (Path.cwd() / "recipes").is_dir() and (Path.cwd() / "registry").is_dir() else None,
                              resolve=resolve)


@app.command()
@guarded
def plan(
    recipe_id: str = typer.Argument(..., help="Recipe id.", autocompletion=_complete_recipe),
    scale: str = typer.Option("tiny", "--scale", "-s", help="tiny, small or full (registry/scales.yaml)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe field, e.g. stages.anneal.tokens=20B (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the stand-in base and data orders."),
    base: Optional[str] = typer.Option(None, "--base", help=BASE_HELP),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of a hub-id base (default: main)."),
    base_peak_lr: Optional[float] = typer.Option(None, "--base-peak-lr", help="Peak LR of your base's pre-training; recipe LRs keep their ratio to it."),
    tokens: Optional[str] = typer.Option(None, "--tokens", help="Mid-training tokens per run over all stages, e.g. 300K, 2B."),
    context: Optional[int] = typer.Option(None, "--context", help="Base context to plan from (default: the base's max_position_embeddings)."),
    stand_in_data: bool = typer.Option(False, "--stand-in-data", help="Built-in stand-in corpora, tokenized with the base's tokenizer (offline)."),
    min_steps: Optional[int] = typer.Option(None, "--min-steps", help="Fewest optimizer steps per stage with --base (default 20)."),
    eval_tasks: Optional[str] = typer.Option(None, "--eval-tasks", help="Comma-separated lm-eval tasks (default: from the recipe's objectives)."),
    eval_include: Optional[list[Path]] = typer.Option(None, "--eval-include", help="Directory of local lm-eval task YAMLs (repeatable)."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="Documents per lm-eval task."),
    write: Optional[Path] = typer.Option(None, "--write", help="Also write the plan files (plan.json, run specifications, ...) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Print the concrete plan of a recipe at a scale, or on your own base.

    Model, tokens and steps per stage, LR at each stage's start and end, context, RoPE, mixture with
    the actual data, runs and merges, every adjustment as a note; at full scale also the compute.

    [bold]Examples[/bold]

      midtrain plan olmo-2-1124-7b --scale tiny
      midtrain plan qwen3-8b --scale full --json | jq .compute
      midtrain plan olmo-2-1124-7b --set 'stages.anneal.mixture.components\\[dolmino-math].share=0.3'
      midtrain plan olmo-2-1124-7b --base HuggingFaceTB/SmolLM2-135M --base-peak-lr 3e-3 --tokens 2B
      midtrain plan qwen3-8b --base ./my-model --base-peak-lr 3e-4 --tokens 300K --stand-in-data --json
    """
    request = _request(recipe_id, scale, overrides, seed, base, revision, base_peak_lr, tokens, context, stand_in_data, min_steps,
                       eval_tasks, eval_include, eval_limit)
    _, result = _planned(request, resolve=base is not None)
    if write is not None:
        from midtrain.plan.contract import write_plan

        write_plan(result, write)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    _print_plan(result)


def _lr(value: float | None) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _print_plan(result: Any) -> None:
    from rich import box
    from rich.table import Table

    from midtrain.cli.render import console
    from midtrain.units import human_count

    out = console()
    summary = result.summary
    model, base = summary.model, summary.base
    where = "your base" if summary.scale == "own-base" else f"[bold]{summary.scale}[/bold] scale"
    out.print(f"[bold]{summary.recipe}[/bold] on {where}")
    if base.kind == "pretrained":
        out.print(f"model   {model['family']} from {base.model}" + (f"@{base.revision}" if base.revision else "")
                  + f", vocab {base.vocab_size:,}, context {model['base_context']:,} → {model['max_context']:,}, RoPE θ {base.rope_theta:,.0f}")
        out.print(f"base    peak LR {_lr(base.peak_lr)}; LR where it left off {_lr(base.lr_end)}")
    else:
        dims = model["dims"]
        out.print(f"model   {model['family']} stand-in: {dims['num_hidden_layers']} layers × {dims['hidden_size']}, "
                  f"{dims['num_attention_heads']} heads ({dims['num_key_value_heads']} KV), vocab {model['vocab_size']}, "
                  f"context {model['base_context']} → {model['max_context']}, RoPE θ {model['rope_theta']:,.0f}")
        out.print(f"base    pretrained here: {base.steps} steps, {human_count(base.tokens)} tokens on "
                  + ", ".join(f"{k.split('.')[0]} {v:.0%}" for k, v in base.mix.items()) + f"; LR ends at {_lr(base.lr_end)}")
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for column in ("stage", "runs", "tokens/run", "steps", "context", "batch", "LR start → end", "schedule", "RoPE"):
        table.add_column(column, justify="right" if column in ("runs", "tokens/run", "steps", "context", "batch") else "left")
    for stage in summary.stages:
        table.add_row(stage.name, str(len(stage.runs)), human_count(stage.tokens_per_run), f"{stage.steps:,}", f"{stage.sequence_length:,}",
                      f"{stage.global_batch:,}", f"{_lr(stage.lr_start)} → {_lr(stage.lr_end)}", stage.schedule, stage.rope)
    out.print(table)
    mixture = Table(box=box.SIMPLE_HEAD, header_style="bold", title="mixtures")
    mixture.add_column("stage")
    mixture.add_column("source")
    mixture.add_column("share", justify="right")
    mixture.add_column("data", style="dim")
    for stage in summary.stages:
        for index, (name, item) in enumerate(stage.mixture.items()):
            mixture.add_row(stage.name if index == 0 else "", name, f"{item['share']:.1%}", item["stream"])
    out.print(mixture)
    for merge in summary.merges:
        out.print(f"merge   {merge.name}: {merge.method} of {', '.join(merge.inputs)}" + (f" (weights {merge.weights})" if merge.weights else ""))
    out.print(f"final   {summary.final}")
    tasks = summary.evaluation.get("lm_eval") or []
    if tasks:
        out.print(f"eval    held-out loss per domain; lm-eval: {', '.join(tasks)}")
    if summary.compute:
        c = summary.compute
        out.print(f"compute {c['flops']:.3g} FLOPs ({c['formula']}); at {c['mfu_assumed']:.0%} MFU ≈ "
                  f"{c['gpu_hours']['H100']:,.0f} H100-hours ≈ {c['gpu_hours']['H200']:,.0f} H200-hours")
    for note in summary.notes:
        out.print(f"[yellow]note[/yellow]    {note}")


@app.command()
@guarded
def reproduce(
    recipe_id: str = typer.Argument(..., help="Recipe id.", autocompletion=_complete_recipe),
    scale: str = typer.Option("tiny", "--scale", "-s", help="tiny, small or full."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe field (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the stand-in base and data orders."),
    base: Optional[str] = typer.Option(None, "--base", help=BASE_HELP),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of a hub-id base (default: main)."),
    base_peak_lr: Optional[float] = typer.Option(None, "--base-peak-lr", help="Peak LR of your base's pre-training."),
    tokens: Optional[str] = typer.Option(None, "--tokens", help="Mid-training tokens per run over all stages, e.g. 300K, 2B."),
    context: Optional[int] = typer.Option(None, "--context", help="Base context to plan from (default: the base's own)."),
    stand_in_data: bool = typer.Option(False, "--stand-in-data", help="Built-in stand-in corpora, tokenized with the base's tokenizer (offline)."),
    min_steps: Optional[int] = typer.Option(None, "--min-steps", help="Fewest optimizer steps per stage with --base (default 20)."),
    eval_tasks: Optional[str] = typer.Option(None, "--eval-tasks", help="Comma-separated lm-eval tasks (default: from the recipe's objectives)."),
    eval_include: Optional[list[Path]] = typer.Option(None, "--eval-include", help="Directory of local lm-eval task YAMLs (repeatable)."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="Documents per lm-eval task."),
    exp: bool = typer.Option(True, "--exp/--repro", help="Run as a DVC experiment (default) or as a plain `dvc repro`."),
    name: Optional[str] = typer.Option(None, "--name", help="Experiment name."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="Processes per training run (torchrun; GPUs on this node)."),
) -> None:
    """Reproduce a recipe end to end through the DVC pipeline in dvc.yaml, at a scale or on your own base.

    data → tokenizer → base → mid-training stages → merges → evaluation → report. Writes params.yaml
    (with a hub id's resolved commit) and runs `dvc exp run` (or `dvc repro`); rerunning after a
    failure or Ctrl-C resumes, finished stages are not redone.

    [bold]Examples[/bold]

      midtrain reproduce olmo-2-1124-7b
      midtrain reproduce qwen3-8b --scale tiny --name qwen3-tiny
      midtrain reproduce olmo-2-1124-7b --base my-org/my-1b --base-peak-lr 3e-3 --tokens 300K --stand-in-data
      midtrain reproduce olmo-2-1124-7b --base my-org/my-1b --base-peak-lr 4e-4 --tokens 5B --nproc-per-node 8
      dvc exp show ; dvc metrics diff ; dvc plots show
    """
    import os
    import sys

    from midtrain.pipeline import check_repository, dvc_command, run_child, summary_lines
    from midtrain.plan.request import write_params

    root = Path.cwd()
    request = _request(recipe_id, scale, overrides, seed, base, revision, base_peak_lr, tokens, context, stand_in_data, min_steps,
                       eval_tasks, eval_include, eval_limit)
    check_repository(root)
    request, result = _planned(request, resolve=True)  # fail fast: unknown id, bad override, base not available, budget too small
    write_params(root, request.model_copy(update={"layout": result.summary.layout.model_dump()}))
    command = dvc_command(root, exp, name)
    env = dict(os.environ, MIDTRAIN_NPROC=str(nproc_per_node))
    typer.echo("running: " + " ".join(command[1:] if command[0].endswith("dvc") else command), err=True)
    try:
        status = run_child(command, cwd=root, env=env)
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
        typer.echo("\n".join(summary_lines(metrics, result.summary.objectives)))
        typer.echo(f"report: {root / 'report' / 'summary.md'}  ·  compare: dvc exp show / dvc metrics diff / dvc plots show", err=True)
    sys.stdout.flush()


@app.command("compare-runs")
@guarded
def compare_runs(
    run_a: str = typer.Argument(..., help="An experiment name (`dvc exp show`), a git revision, or 'workspace'."),
    run_b: str = typer.Argument(..., help="The other one."),
    out: Optional[Path] = typer.Option(None, "--out", help="The comparison plot (default compare/A-vs-B.png)."),
) -> None:
    """Two reproductions side by side: held-out loss per domain, long-context loss, benchmarks.

    Reads each experiment's metrics from its commit, prints the comparison and writes a plot.

    [bold]Examples[/bold]

      midtrain compare-runs olmo2-demo qwen3-tiny
      midtrain compare-runs workspace HEAD --out compare.png
    """
    from midtrain.compare import compare_runs as run

    target = out or Path("compare") / f"{_safe(run_a)}-vs-{_safe(run_b)}.png"
    lines, path = run(Path.cwd(), run_a, run_b, target)
    typer.echo("\n".join(lines))
    typer.echo(f"plot: {path}", err=True)


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60]


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
    from midtrain.pipeline import stage_evaluate as run

    metrics = run(Path.cwd(), plan_dir, out)
    typer.echo(f"evaluated base and final model: {out} ({len(metrics['loss'])} domains"
               + (f", {len(metrics.get('benchmarks', {}))} lm-eval tasks)" if metrics.get("benchmarks") else ")"))


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
