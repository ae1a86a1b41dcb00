"""`midtrain reproduce`: a recipe end to end through the DVC pipeline (midtrain.pipeline runs it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from midtrain.cli.app import guarded
from midtrain.cli.common import complete_recipe
from midtrain.cli.run.request import BASE_HELP, build_request, planned

if TYPE_CHECKING:
    from midtrain.launch import Slurm
    from midtrain.plan.contract import Plan
    from midtrain.plan.request import PlanRequest


# how each training run is launched (midtrain/launch.py); run-time choices, never in params.yaml
NPROC = typer.Option(
    None, "--nproc-per-node", help="Processes per node and training run (torchrun; default 1, or --gpus-per-node)."
)
LAUNCHER = typer.Option(
    "local", "--launcher", help="local: train on this machine; slurm: each training run is a Slurm job."
)
NODES = typer.Option(1, "--nodes", help="Nodes per training run (--launcher slurm).")
GPUS = typer.Option(None, "--gpus-per-node", help="GPUs per node, one process each (--launcher slurm).")
PARTITION = typer.Option(None, "--partition", help="Slurm partition (default: the cluster's).")
ACCOUNT = typer.Option(None, "--account", help="Slurm account to charge.")
TIME = typer.Option(
    None, "--time", help="Time limit per job, e.g. 4:00:00 or 2-00:00:00; a run that hits it goes on in a new job."
)
SLURM_ARGS = typer.Option(
    None, "--slurm-arg", help="Another sbatch option, KEY=VALUE or KEY (repeatable), e.g. qos=high, exclusive."
)
MAX_RETRIES = typer.Option(
    3, "--max-retries", help="Resubmissions of a failed job, or of one that made no progress (--launcher slurm)."
)


@guarded
def reproduce(
    recipe_id: str = typer.Argument(..., help="Recipe id.", autocompletion=complete_recipe),
    scale: str = typer.Option("tiny", "--scale", "-s", help="tiny, small or full."),
    overrides: list[str] | None = typer.Option(None, "--set", help="Override a recipe field (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the stand-in base and data orders."),
    base: str | None = typer.Option(None, "--base", help=BASE_HELP),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch, tag or commit of a hub-id base (default: main)."
    ),
    base_peak_lr: float | None = typer.Option(None, "--base-peak-lr", help="Peak LR of your base's pre-training."),
    tokens: str | None = typer.Option(
        None, "--tokens", help="Mid-training tokens per run over all stages, e.g. 300K, 2B."
    ),
    context: int | None = typer.Option(None, "--context", help="Base context to plan from (default: the base's own)."),
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
    exp: bool = typer.Option(
        True, "--exp/--repro", help="Run as a DVC experiment (default) or as a plain `dvc repro`."
    ),
    name: str | None = typer.Option(None, "--name", help="Experiment name."),
    nproc_per_node: int | None = NPROC,
    launcher: str = LAUNCHER,
    nodes: int = NODES,
    gpus_per_node: int | None = GPUS,
    partition: str | None = PARTITION,
    account: str | None = ACCOUNT,
    time_limit: str | None = TIME,
    slurm_args: list[str] | None = SLURM_ARGS,
    max_retries: int = MAX_RETRIES,
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
      midtrain reproduce qwen3-8b --scale full --launcher slurm --nodes 4 --gpus-per-node 8 --partition gpu --time 1-00:00:00
      dvc exp show ; dvc metrics diff ; dvc plots show
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
    from midtrain.launch import launch_choice

    launch = launch_choice(
        launcher, nodes, gpus_per_node, nproc_per_node, partition, account, time_limit, slurm_args, max_retries
    )
    _reproduce(request, exp, name, launch)


def _reproduce(request: PlanRequest, exp: bool, name: str | None, launch: tuple[int, Slurm | None]) -> None:
    """Plan (to fail fast), write params.yaml, run the DVC pipeline and print the results.

    How training runs are launched (`launch`: processes per node here, or Slurm settings) reaches the
    stages through the environment, not params.yaml: it does not change what a run computes, so it
    must not make DVC rerun anything (midtrain/launch.py)."""
    import os

    from midtrain.launch import LAUNCH_ENV
    from midtrain.pipeline import check_repository, dvc_command
    from midtrain.plan.request import write_params

    root = Path.cwd()
    check_repository(root)
    # fail fast: unknown id, bad override, base not available, budget too small
    request, result = planned(request, resolve=True)
    write_params(root, request.model_copy(update={"layout": result.summary.layout.model_dump()}))
    command = dvc_command(root, exp, name)
    nproc_per_node, slurm = launch
    env = {k: v for k, v in os.environ.items() if k != LAUNCH_ENV}
    env["MIDTRAIN_NPROC"] = str(nproc_per_node)
    if slurm is not None:
        env[LAUNCH_ENV] = slurm.to_env()
        typer.echo(f"training runs: Slurm jobs of {slurm.describe()}", err=True)
    typer.echo("running: " + " ".join(command[1:] if command[0].endswith("dvc") else command), err=True)
    _run_pipeline(command, root, env)
    _print_results(root, result)


def _run_pipeline(command: list[str], root: Path, env: dict[str, str]) -> None:
    from midtrain.pipeline import run_child

    try:
        status = run_child(command, cwd=root, env=env, quiet_log=root / "logs" / "dvc.log")
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume; finished stages are not redone", err=True)
        raise typer.Exit(130) from None
    if status:
        typer.echo(
            f"the pipeline failed (exit status {status}); DVC printed which stage. Fix it and rerun: finished stages are cached, "
            "training resumes from its last checkpoint",
            err=True,
        )
        raise typer.Exit(status)


def _print_results(root: Path, result: Plan) -> None:
    import sys

    from midtrain.pipeline import summary_lines

    metrics_path = root / "metrics" / "eval.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        typer.echo("\n".join(summary_lines(metrics, result.summary.objectives)))
        typer.echo(
            f"report: {root / 'report' / 'summary.md'}  ·  compare: dvc exp show / dvc metrics diff / dvc plots show",
            err=True,
        )
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)
