"""`midtrain stage ...`: the pipeline's stages, as dvc.yaml runs them (midtrain.pipeline holds each stage)."""

from __future__ import annotations

from pathlib import Path

import typer

from midtrain.cli.app import guarded
from midtrain.cli.run.plan import print_plan

HELP = "The pipeline's stages, as dvc.yaml runs them (read params.yaml and plan/)."


def _stages() -> None:
    """Third-party noise goes to logs/third-party.log; midtrain's own output stays on the terminal."""
    from midtrain.quiet import quiet_third_party

    quiet_third_party(Path("logs"))


@guarded
def stage_plan(out: Path = typer.Option(Path("plan"), "--out")) -> None:
    """Plan params.yaml's recipe at its scale into plan/."""
    from midtrain.pipeline import stage_plan as run

    result = run(Path.cwd(), out)
    print_plan(result)


@guarded
def stage_data(plan_dir: Path = typer.Option(Path("plan"), "--plan")) -> None:
    """Prepare the data the plan needs."""
    from midtrain.pipeline import stage_data as run

    run(Path.cwd(), plan_dir)


@guarded
def stage_base(plan_dir: Path = typer.Option(Path("plan"), "--plan")) -> None:
    """Pretrain the stand-in base (tiny/small) or fetch the published one (full)."""
    from midtrain.pipeline import stage_base as run

    run(Path.cwd(), plan_dir)


@guarded
def stage_midtrain(plan_dir: Path = typer.Option(Path("plan"), "--plan")) -> None:
    """Every mid-training run and merge of the plan (unchanged ones are skipped)."""
    from midtrain.pipeline import stage_midtrain as run

    run(Path.cwd(), plan_dir)


@guarded
def stage_evaluate(
    plan_dir: Path = typer.Option(Path("plan"), "--plan"), out: Path = typer.Option(Path("metrics/eval.json"), "--out")
) -> None:
    """Evaluate the base and the final model into metrics/eval.json."""
    from midtrain.pipeline import stage_evaluate as run

    metrics = run(Path.cwd(), plan_dir, out)
    typer.echo(
        f"evaluated base and final model: {out} ({len(metrics['loss'])} domains"
        + (f", {len(metrics.get('benchmarks', {}))} lm-eval tasks)" if metrics.get("benchmarks") else ")")
    )


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


COMMANDS = {
    "plan": stage_plan,
    "data": stage_data,
    "base": stage_base,
    "midtrain": stage_midtrain,
    "evaluate": stage_evaluate,
    "report": stage_report,
}


def register(app: typer.Typer) -> None:
    """Add the `stage` group, with one command per pipeline stage, to `app`."""
    stage_app = typer.Typer(help=HELP, no_args_is_help=True)
    stage_app.callback()(_stages)
    for name, command in COMMANDS.items():
        stage_app.command(name)(command)
    app.add_typer(stage_app, name="stage")
