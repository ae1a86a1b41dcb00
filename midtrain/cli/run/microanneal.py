"""`midtrain microanneal`: choose mid-training data by short anneals (midtrain.microanneal), and the
hidden `midtrain microanneal-stage ...` commands that microanneal/dvc.yaml runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from midtrain.cli.app import guarded
from midtrain.cli.run.request import BASE_HELP
from midtrain.errors import MidtrainError

EVAL_HELP = (
    "Comma-separated targets: held-out domains (prose, code, math, qa, longdoc) and/or lm-eval tasks "
    "(midtrain_math, or the harness's); default prose,code,math,qa. The answer-token loss on held-out math "
    "(math-answer) is always reported."
)


def _request(options: dict[str, Any]) -> Any:
    """The options as a validated MicroRequest, each error naming its option."""
    from pydantic import ValidationError

    from midtrain.microanneal.design import BUILTIN_SOURCES, MicroEval, MicroRequest, parse_mix, parse_swaps
    from midtrain.plan.request import OwnBase

    targets = [t.strip() for t in (options["eval"] or "").split(",") if t.strip()]
    known_domains = {*BUILTIN_SOURCES, "math-answer"}
    domains = [t for t in targets if t in known_domains] if targets else None
    tasks = [t for t in targets if t not in known_domains]
    base = None
    if options["base"] is not None:
        base = OwnBase(
            model=options["base"],
            requested_revision=options["revision"],
            peak_lr=options["base_peak_lr"],
            stand_in_data=True,
        )
    elif options["revision"] or options["base_peak_lr"]:
        raise MidtrainError.single("--revision and --base-peak-lr go with --base", expected="--base HUB_ID|DIR")
    try:
        return MicroRequest(
            recipe=options["recipe"] or "olmo-2-1124-7b",
            swap=parse_swaps(options["swap"] or []),
            control=parse_mix(options["control"]) if options["control"] else None,
            candidates=list(options["candidate"] or []),
            share=options["share"],
            tokens=options["tokens"],
            seeds=options["seeds"],
            lr=options["lr"],
            seed=options["seed"],
            base=base,
            eval=MicroEval(
                domains=domains,
                tasks=tasks,
                include=[str(p) for p in options["eval_include"] or []],
                limit=options["eval_limit"],
            ),
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise MidtrainError.single(
            f"{err['msg']} (option --{where.split('.')[0].replace('_', '-')})", found=str(err.get("input"))
        ) from None


@guarded
def microanneal(
    control: str | None = typer.Option(
        None, "--control", help="The control mix, SOURCE or SOURCE:SHARE,...; default: the stand-in base's own data."
    ),
    candidate: list[str] | None = typer.Option(None, "--candidate", help="A candidate source (repeatable)."),
    share: float = typer.Option(0.3, "--share", help="Each candidate's share of its arm; the rest is the control."),
    tokens: str = typer.Option("200K", "--tokens", help="Tokens per arm and seed, e.g. 200K, 10B."),
    seeds: int = typer.Option(2, "--seeds", help="Data orders per arm (the spread comes from these)."),
    lr: float | None = typer.Option(
        None, "--lr", help="Start LR of the linear decay to 0 (default: the base's final LR)."
    ),
    eval_targets: str | None = typer.Option(None, "--eval", help=EVAL_HELP),
    eval_include: list[Path] | None = typer.Option(
        None, "--eval-include", help="Directory of local lm-eval task YAMLs."
    ),
    eval_limit: int | None = typer.Option(None, "--eval-limit", help="Documents per lm-eval task."),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Recipe form: anneal like this recipe's final stage (with --swap)."
    ),
    swap: list[str] | None = typer.Option(
        None, "--swap", help="Recipe form: RECIPE_SOURCE=CANDIDATE, one arm each (repeatable)."
    ),
    base: str | None = typer.Option(None, "--base", help=BASE_HELP),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit of a hub-id base."),
    base_peak_lr: float | None = typer.Option(None, "--base-peak-lr", help="Peak LR of your base's pre-training."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stand-in base."),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", help="Units at once (default: one per GPU, or one per core)."
    ),
    exp: bool = typer.Option(True, "--exp/--repro", help="Record a DVC experiment (default) or run `dvc repro`."),
    name: str | None = typer.Option(None, "--name", help="Experiment name."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the arms, mixtures and budget; run nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Choose mid-training data by microannealing: short anneals of one base, a control arm and one arm
    per candidate, each with several data orders, compared on held-out loss and benchmarks.

    Runs microanneal/dvc.yaml: every arm × seed is a cached DVC stage (adding a candidate runs only its
    units; rerunning does nothing), units run in parallel, and the result is a DVC experiment. Writes
    microanneal/report/microanneal.md (table, mixtures, recommendation) and report/deltas.png.

    [bold]Examples[/bold]

      midtrain microanneal --control prose --candidate math --candidate code --candidate qa --candidate math-noisy --share 0.3 --tokens 200K --seeds 2
      midtrain microanneal --recipe olmo-2-1124-7b --swap dolmino-math=my-math
      midtrain microanneal --base my-org/my-1b --base-peak-lr 3e-4 --control my-web --candidate my-math --tokens 10B --seeds 3
      midtrain microanneal --candidate math --eval math,midtrain_math --json
      dvc exp show ; dvc plots show microanneal/report/deltas.png
    """
    options = dict(locals())
    options["eval"] = eval_targets
    run_microanneal(options)


def run_microanneal(options: dict[str, Any]) -> None:
    import contextlib
    import sys

    from midtrain.catalog import load_catalog
    from midtrain.microanneal.design import write_request
    from midtrain.microanneal.plan import plan_design
    from midtrain.microanneal.runner import run_experiment
    from midtrain.pipeline import check_repository

    project = Path.cwd()
    request = _request(options)
    catalog = load_catalog(project)
    if request.base is not None:
        from midtrain.microanneal.plan import base_request
        from midtrain.plan.api import pin_base

        request = request.model_copy(update={"base": pin_base(base_request(request), project).base})
    design, plan, summary = plan_design(request, catalog, project, resolve=True)
    request = request.model_copy(update={"units": design.units(), "layout": plan.summary.layout.model_dump()})
    _print_design(summary)
    if options["dry_run"]:
        return
    check_repository(project)
    if not (project / "microanneal" / "dvc.yaml").exists():
        raise MidtrainError.single(
            "no microanneal/dvc.yaml here; copy it from the midtrain repository (or run from its root)",
            file=project / "microanneal" / "dvc.yaml",
        )
    write_request(project / "microanneal" / "params.yaml", request)
    echo = lambda line: typer.echo(line, err=True)  # noqa: E731
    try:
        # with --json, stdout carries only the result: DVC's relayed output goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if options["as_json"] else contextlib.nullcontext():
            run_experiment(project, request.units, options["jobs"], options["exp"], options["name"], echo)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume; finished units are not redone", err=True)
        raise typer.Exit(130) from None
    result = json.loads((project / "microanneal" / "metrics" / "microanneal.json").read_text(encoding="utf-8"))
    if options["as_json"]:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_result(result)
        typer.echo("report: microanneal/report/microanneal.md  ·  compare: dvc exp show", err=True)
    sys.stdout.flush()


def _print_design(summary: Any) -> None:
    typer.echo(
        f"microanneal ({summary.form} form, {summary.recipe}): base {summary.base}, {len(summary.arms) - 1} candidate "
        f"arm(s) + control × {summary.seeds} seed(s) = {len(summary.units)} units of {summary.tokens_per_unit:,} tokens "
        f"({summary.steps} steps × {summary.global_batch} × {summary.sequence_length}, {summary.schedule})",
        err=True,
    )
    for name, arm in summary.arms.items():
        typer.echo(f"  {name}: " + ", ".join(f"{s} {v:.0%}" for s, v in arm.sources.items()), err=True)
    for note in summary.notes:
        typer.echo(f"  note: {note}", err=True)


def _print_result(result: dict[str, Any]) -> None:
    control = result["control"]["loss"]
    typer.echo("held-out loss vs control (mean over seeds; ± seed spread):")
    for name, arm in result["arms"].items():
        cells = []
        for metric in control:
            block = arm["loss"].get(metric)
            if block:
                rel = block["relative"] if block["relative"] is not None else 0.0
                cells.append(
                    f"{metric} {rel:+.1%} ±{block['spread'] / control[metric]['mean']:.1%} {block['verdict']} (#{block['rank']})"
                )
        typer.echo(f"  {name:>12}: " + "; ".join(cells))
    typer.echo(result["recommendation"])


# ---------------------------------------------------------------- the stages dvc.yaml runs


def _here() -> Path:
    from midtrain.quiet import quiet_third_party

    here = Path.cwd()
    quiet_third_party(here.parent / "logs")
    return here


@guarded
def stage_plan() -> None:
    """Check params.yaml and plan the base, data, units and scoring into plan/."""
    from midtrain.microanneal.stages import stage_plan as run

    _print_design(run(_here()))


@guarded
def stage_data() -> None:
    """Prepare the data, plus math-noisy and the registry sources the arms name."""
    from midtrain.microanneal.stages import stage_data as run

    run(_here())


@guarded
def stage_base() -> None:
    """Pretrain the stand-in base, or fetch yours."""
    from midtrain.microanneal.stages import stage_base as run

    run(_here())


@guarded
def stage_units() -> None:
    """Write every unit's run specification with the identity of what it reads."""
    from midtrain.microanneal.stages import stage_units as run

    units = run(_here())
    typer.echo(f"{len(units)} unit specifications in unit-specs/")


@guarded
def stage_anneal(unit: str = typer.Argument(..., help="arm-s<seed>")) -> None:
    """Train one unit."""
    from midtrain.microanneal.stages import stage_anneal as run

    run(_here(), unit)


@guarded
def stage_score(unit: str = typer.Argument(..., help="arm-s<seed>")) -> None:
    """Score one unit."""
    from midtrain.microanneal.stages import stage_score as run

    result = run(_here(), unit)
    typer.echo(f"{unit}: " + ", ".join(f"{k} {v:.4f}" for k, v in result["loss"].items()))


@guarded
def stage_report() -> None:
    """Statistics, report/microanneal.md and report/deltas.png."""
    from midtrain.microanneal.stages import stage_report as run

    result = run(_here())
    typer.echo(result["recommendation"])


STAGES = {
    "plan": stage_plan,
    "data": stage_data,
    "base": stage_base,
    "units": stage_units,
    "anneal": stage_anneal,
    "score": stage_score,
    "report": stage_report,
}


def register(app: typer.Typer) -> None:
    """Add `microanneal` and the hidden `microanneal-stage` group to `app`."""
    app.command("microanneal")(microanneal)
    group = typer.Typer(
        help="The stages microanneal/dvc.yaml runs (working directory microanneal/).", no_args_is_help=True
    )
    for stage_name, command in STAGES.items():
        group.command(stage_name)(command)
    app.add_typer(group, name="microanneal-stage", hidden=True)
