"""`midtrain plan`: the concrete plan of a recipe at a scale or on your own base, and how plans are printed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import complete_recipe
from midtrain.cli.run.request import BASE_HELP, build_request, planned

if TYPE_CHECKING:
    from rich.table import Table

    from midtrain.plan.contract import Plan, PlanSummary


@guarded
def plan(
    recipe_id: str = typer.Argument(..., help="Recipe id.", autocompletion=complete_recipe),
    scale: str = typer.Option("tiny", "--scale", "-s", help="tiny, small or full (registry/scales.yaml)."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a recipe field, e.g. stages.anneal.tokens=20B (repeatable)."
    ),
    seed: int = typer.Option(0, help="Seed of the stand-in base and data orders."),
    base: str | None = typer.Option(None, "--base", help=BASE_HELP),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch, tag or commit of a hub-id base (default: main)."
    ),
    base_peak_lr: float | None = typer.Option(
        None, "--base-peak-lr", help="Peak LR of your base's pre-training; recipe LRs keep their ratio to it."
    ),
    tokens: str | None = typer.Option(
        None, "--tokens", help="Mid-training tokens per run over all stages, e.g. 300K, 2B."
    ),
    context: int | None = typer.Option(
        None, "--context", help="Base context to plan from (default: the base's max_position_embeddings)."
    ),
    stand_in_data: bool = typer.Option(
        False, "--stand-in-data", help="Built-in stand-in corpora, tokenized with the base's tokenizer (offline)."
    ),
    min_steps: int | None = typer.Option(
        None, "--min-steps", help="Fewest optimizer steps per stage with --base (default 20)."
    ),
    eval_tasks: str | None = typer.Option(
        None, "--eval-tasks", help="Comma-separated lm-eval tasks (default: from the recipe's objectives)."
    ),
    eval_include: list[Path] | None = typer.Option(
        None, "--eval-include", help="Directory of local lm-eval task YAMLs (repeatable)."
    ),
    eval_limit: int | None = typer.Option(None, "--eval-limit", help="Documents per lm-eval task."),
    write: Path | None = typer.Option(
        None, "--write", help="Also write the plan files (plan.json, run specifications, ...) here."
    ),
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
    request = build_request(
        recipe_id,
        scale,
        overrides,
        seed,
        base,
        revision,
        base_peak_lr,
        tokens,
        context,
        stand_in_data,
        min_steps,
        eval_tasks,
        eval_include,
        eval_limit,
    )
    _, result = planned(request, resolve=base is not None)
    if write is not None:
        from midtrain.plan.contract import write_plan

        write_plan(result, write)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    print_plan(result)


def _lr(value: float | None) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def print_plan(result: Plan) -> None:
    """The plan as `midtrain plan` and `midtrain stage plan` print it: model, base, stages, mixtures, merges, notes."""
    from midtrain.cli.render import console

    out = console()
    summary = result.summary
    where = "your base" if summary.scale == "own-base" else f"[bold]{summary.scale}[/bold] scale"
    out.print(f"[bold]{summary.recipe}[/bold] on {where}")
    for line in _model_lines(summary):
        out.print(line)
    out.print(_stage_table(summary))
    out.print(_mixture_table(summary))
    for merge in summary.merges:
        out.print(
            f"merge   {merge.name}: {merge.method} of {', '.join(merge.inputs)}"
            + (f" (weights {merge.weights})" if merge.weights else "")
        )
    out.print(f"final   {summary.final}")
    tasks = summary.evaluation.get("lm_eval") or []
    if tasks:
        out.print(f"eval    held-out loss per domain; lm-eval: {', '.join(tasks)}")
    if summary.compute:
        c = summary.compute
        out.print(
            f"compute {c['flops']:.3g} FLOPs ({c['formula']}); at {c['mfu_assumed']:.0%} MFU ≈ "
            f"{c['gpu_hours']['H100']:,.0f} H100-hours ≈ {c['gpu_hours']['H200']:,.0f} H200-hours"
        )
    from rich.markup import escape

    for note in summary.notes:
        out.print(f"[yellow]note[/yellow]    {escape(note)}")


def _model_lines(summary: PlanSummary) -> list[str]:
    from midtrain.units import human_count

    model, base = summary.model, summary.base
    if base.kind == "pretrained":
        return [
            f"model   {model['family']} from {base.model}"
            + (f"@{base.revision}" if base.revision else "")
            + f", vocab {base.vocab_size:,}, context {model['base_context']:,} → {model['max_context']:,}, RoPE θ {base.rope_theta:,.0f}",
            f"base    peak LR {_lr(base.peak_lr)}; LR where it left off {_lr(base.lr_end)}",
        ]
    dims = model["dims"]
    return [
        f"model   {model['family']} stand-in: {dims['num_hidden_layers']} layers × {dims['hidden_size']}, "
        f"{dims['num_attention_heads']} heads ({dims['num_key_value_heads']} KV), vocab {model['vocab_size']}, "
        f"context {model['base_context']} → {model['max_context']}, RoPE θ {model['rope_theta']:,.0f}",
        f"base    pretrained here: {base.steps} steps, {human_count(base.tokens)} tokens on "
        + ", ".join(f"{k.split('.')[0]} {v:.0%}" for k, v in base.mix.items())
        + f"; LR ends at {_lr(base.lr_end)}",
    ]


def _stage_table(summary: PlanSummary) -> Table:
    from rich import box
    from rich.table import Table

    from midtrain.units import human_count

    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for column in ("stage", "runs", "tokens/run", "steps", "context", "batch", "LR start → end", "schedule", "RoPE"):
        table.add_column(
            column, justify="right" if column in ("runs", "tokens/run", "steps", "context", "batch") else "left"
        )
    for stage in summary.stages:
        table.add_row(
            f"{stage.name} (branch)" if stage.branch else stage.name,
            str(len(stage.runs)),
            human_count(stage.tokens_per_run),
            f"{stage.steps:,}",
            f"{stage.sequence_length:,}",
            f"{stage.global_batch:,}",
            f"{_lr(stage.lr_start)} → {_lr(stage.lr_end)}",
            stage.schedule,
            stage.rope,
        )
    return table


def _mixture_table(summary: PlanSummary) -> Table:
    from rich import box
    from rich.table import Table

    mixture = Table(box=box.SIMPLE_HEAD, header_style="bold", title="mixtures")
    mixture.add_column("stage")
    mixture.add_column("source")
    mixture.add_column("share", justify="right")
    mixture.add_column("data", style="dim")
    for stage in summary.stages:
        for index, (name, item) in enumerate(stage.mixture.items()):
            mixture.add_row(stage.name if index == 0 else "", name, f"{item['share']:.1%}", item["stream"])
    return mixture


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
