"""`midtrain data prepare` and `midtrain data inspect` (the work is in midtrain.data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from midtrain.cli.app import guarded
from midtrain.errors import MidtrainError

HELP = "Build and look at the token data a recipe trains on: corpora, tokenizer, decontaminated packed shards."


PANEL = "Data engine (datatrove)"
EXECUTOR = typer.Option(
    None,
    "--executor",
    help="local (processes here), slurm (array jobs) or ray (a running cluster). Default: this one process. "
    "The shards are the same byte for byte.",
    rich_help_panel=PANEL,
)
WORKERS = typer.Option(None, "--workers", help="Engine tasks running at once (default 1).", rich_help_panel=PANEL)
TASKS = typer.Option(None, "--tasks", help="Parts each stream is cut into (default: --workers).", rich_help_panel=PANEL)
CPUS = typer.Option(1, "--cpus-per-task", help="Tokenizer threads per task (Slurm/Ray: CPUs).", rich_help_panel=PANEL)
MEMORY = typer.Option(2, "--mem-per-cpu-gb", help="Memory per CPU in GB (Slurm/Ray).", rich_help_panel=PANEL)
PARTITION = typer.Option(None, "--partition", help="Slurm partition.", rich_help_panel=PANEL)
TIME = typer.Option("24:00:00", "--time", help="Slurm time limit of each job.", rich_help_panel=PANEL)
QOS = typer.Option(None, "--qos", help="Slurm QOS.", rich_help_panel=PANEL)
SBATCH = typer.Option(None, "--sbatch-arg", help="Extra #SBATCH KEY=VALUE (repeatable).", rich_help_panel=PANEL)
SLURM_ENV = typer.Option(
    None, "--slurm-env", help="Command each Slurm job runs first (default: activate this venv).", rich_help_panel=PANEL
)
RAY_ADDRESS = typer.Option(
    None, "--ray-address", help="Ray cluster HOST:PORT (default: RAY_ADDRESS, else auto).", rich_help_panel=PANEL
)


@guarded
def prepare(
    out: Path = typer.Option(Path("data"), "--out", "-o", help="Output directory."),
    scale: str = typer.Option(
        "tiny", "--scale", help="tiny (built-in corpora, trained BPE) or small/full (the recipe's sources)."
    ),
    recipe: str | None = typer.Option(
        None, "--recipe", "-r", help="Recipe whose sources to prepare (needed above tiny)."
    ),
    seed: int = typer.Option(0, help="Seed of the built-in generators."),
    vocab_size: int | None = typer.Option(None, help="BPE vocabulary at tiny scale (default: the scale profile's)."),
    ngram: int = typer.Option(13, help="n of the decontamination n-grams."),
    threshold: float = typer.Option(
        0.5, help="Share of an evaluation item's n-grams that marks a document contaminated."
    ),
    flag_only: bool = typer.Option(False, "--flag-only", help="Report contaminated documents but keep them."),
    eval_file: list[Path] | None = typer.Option(
        None, "--eval-file", help="Extra evaluation set (jsonl with 'text') to decontaminate against."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    executor: str | None = EXECUTOR,
    workers: int | None = WORKERS,
    tasks: int | None = TASKS,
    cpus_per_task: int = CPUS,
    mem_per_cpu_gb: int = MEMORY,
    partition: str | None = PARTITION,
    time_limit: str = TIME,
    qos: str | None = QOS,
    sbatch_arg: list[str] | None = SBATCH,
    slurm_env: str | None = SLURM_ENV,
    ray_address: str | None = RAY_ADDRESS,
) -> None:
    """Prepare token shards (resumable: finished pieces whose inputs did not change are kept).

    [bold]Examples[/bold]

      midtrain data prepare --scale tiny --out data/tiny
      midtrain data prepare --scale tiny --out data/tiny --eval-file my_benchmark.jsonl
      midtrain data prepare --scale full --recipe olmo-2-1124-7b --out data/olmo2
      midtrain data prepare --scale tiny --out data/tiny --executor local --workers 2
      midtrain data prepare --scale tiny --out /shared/tiny --executor slurm --tasks 8 --workers 4 --partition cpu
    """
    from midtrain.catalog import load_catalog

    slurm = {"partition": partition, "time": time_limit, "qos": qos, "sbatch_arg": sbatch_arg, "env": slurm_env}
    engine = _engine_options(executor, workers, tasks, cpus_per_task, mem_per_cpu_gb, slurm, ray_address)
    catalog = load_catalog()
    if scale not in catalog.registry.scales:
        raise MidtrainError.single(f"unknown scale {scale!r}", expected=", ".join(catalog.registry.scales), found=scale)
    if not 0 < threshold <= 1:
        raise MidtrainError.single("threshold must be in (0, 1]", found=str(threshold))
    for path in eval_file or []:
        if not path.is_file():
            raise MidtrainError.single("evaluation file not found", file=path)
    if scale == "tiny":
        from midtrain.data.prepare import PrepareOptions, prepare_tiny

        profile = catalog.registry.scales["tiny"]
        options = PrepareOptions(
            out=out,
            vocab_size=vocab_size or profile.vocab_size or 2048,
            seed=seed,
            ngram=ngram,
            threshold=threshold,
            action="flag" if flag_only else "drop",
            extra_eval=list(eval_file or []),
            progress=not quiet,
            engine=engine,
        )
        manifest = prepare_tiny(options)
    else:
        manifest = _prepare_sources(catalog, out, scale, recipe, quiet, engine)
    _say_prepared(out, manifest, engine)


def _say_prepared(out: Path, manifest: dict[str, Any], engine: Any) -> None:
    if engine is not None and engine.submitted:
        typer.echo(
            f"submitted Slurm jobs {', '.join(engine.submitted)} (tokenize, then merge); when they are done, the same "
            f"command checks the result (finished work is kept) and {out / 'shards'} holds the shards"
        )
        return
    streams = manifest["streams"]
    total = sum(s["tokens"] for s in streams.values())
    typer.echo(f"prepared {len(streams)} streams, {total:,} tokens in {out / 'shards'}")


def _engine_options(
    executor: str | None,
    workers: int | None,
    tasks: int | None,
    cpus_per_task: int,
    mem_per_cpu_gb: int,
    slurm: dict[str, Any],
    ray_address: str | None,
) -> Any:
    """The data engine's options (None: the single-process path), checked."""
    if executor is None:
        given = [
            name
            for name, value in (("--workers", workers), ("--tasks", tasks), ("--partition", slurm["partition"]))
            if value is not None
        ]
        if given:
            raise MidtrainError.single(
                f"{', '.join(given)} only apply to the data engine", expected="--executor local, slurm or ray"
            )
        return None
    from midtrain.data.engine import EngineOptions

    extra: dict[str, str] = {}
    for item in slurm["sbatch_arg"] or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MidtrainError.single("--sbatch-arg takes KEY=VALUE", expected="e.g. account=myproject", found=item)
        extra[key.strip().lstrip("-")] = value
    engine = EngineOptions(
        executor=executor,
        workers=1 if workers is None else workers,
        tasks=tasks,
        cpus_per_task=cpus_per_task,
        mem_per_cpu_gb=mem_per_cpu_gb,
        partition=slurm["partition"],
        time=slurm["time"],
        qos=slurm["qos"],
        sbatch_args=extra,
        env_command=slurm["env"],
        ray_address=ray_address,
    )
    engine.check()
    return engine


def _prepare_sources(
    catalog: Any, out: Path, scale: str, recipe: str | None, quiet: bool, engine: Any = None
) -> dict[str, Any]:
    """Above tiny: the recipe's own sources, tokenized with its base model's tokenizer."""
    if recipe is None:
        raise MidtrainError.single(f"--recipe is needed at scale {scale!r}: its sources and tokenizer are prepared")
    from midtrain.data.prepare import prepare_sources

    chosen = catalog.get(recipe)
    names = sorted({c.source for s in chosen.stages for c in s.mixture.components})
    model = catalog.registry.models[chosen.base.model]
    if not model.hub_id:
        raise MidtrainError.single(f"base model {chosen.base.model!r} has no hub id for its tokenizer")
    return prepare_sources(
        out,
        {n: catalog.registry.sources[n] for n in names},
        model.hub_id,
        model.revision,
        base=catalog.root,
        progress=not quiet,
        engine=engine,
    )


@guarded
def inspect(
    directory: Path = typer.Argument(..., help="A directory made by `midtrain data prepare`."),
    recipe: str | None = typer.Option(None, "--recipe", "-r", help="Also sample each stage's mixture of this recipe."),
    sequences: int = typer.Option(10_000, help="Sequences to draw when measuring realised shares."),
    sequence_length: int = typer.Option(128, "--seq-len", help="Window length for sampling."),
    samples: int = typer.Option(3, help="Decoded samples per stage."),
    seed: int = typer.Option(0, help="Sampler seed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Look at prepared data: tokens per stream and decontamination counts.

    With --recipe, also each stage's realised mixture shares, repetition and decoded samples.

    [bold]Examples[/bold]

      midtrain data inspect data/tiny
      midtrain data inspect data/tiny --recipe olmo-2-1124-7b --json
    """
    from midtrain.data.inspect import inspect_streams, sample_stages

    info = inspect_streams(directory)
    if recipe is not None:
        from midtrain.catalog import load_catalog

        catalog = load_catalog()
        chosen = catalog.get(recipe)
        info["recipe"] = chosen.id
        info["stages"] = sample_stages(directory, chosen, catalog.registry, sequences, sequence_length, samples, seed)
    if as_json:
        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    _print_inspection(directory, info)


def _print_inspection(directory: Path, info: dict[str, Any]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from midtrain.cli.render import console

    out = console()
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", title=f"streams in {escape(str(directory))}")
    for column in ("stream", "tokens", "documents", "dtype", "contaminated"):
        table.add_column(column, justify="left" if column == "stream" else "right")
    contamination = info.get("decontamination", {}).get("sources", {})
    for name, stream in info["streams"].items():
        counts = contamination.get(name)
        table.add_row(
            name,
            f"{stream['tokens']:,}",
            f"{stream['documents']:,}",
            stream["dtype"],
            f"{counts['contaminated']:,} of {counts['documents']:,}" if counts else "-",
        )
    out.print(table)
    for stage_name, stage in info.get("stages", {}).items():
        shares = Table(
            box=box.SIMPLE_HEAD, header_style="bold", title=f"stage {stage_name}: {stage['sequences']:,} sequences"
        )
        for column in ("stream", "target", "realised", "epochs"):
            shares.add_column(column, justify="left" if column == "stream" else "right")
        for name, target in stage["target_shares"].items():
            shares.add_row(
                name,
                f"{target:.2%}",
                f"{stage['realised_shares'].get(name, 0):.2%}",
                f"{stage['epochs'].get(name, 0):.3f}",
            )
        out.print(shares)
        for sample in stage["samples"]:
            out.print(
                f"[dim]{sample['stream']} #{sample['window']}:[/dim] {escape(repr(sample['text']))}"
            )  # data, not markup


def register(app: typer.Typer) -> None:
    """Add the `data` group (prepare, inspect) to `app`."""
    data_app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="rich")
    data_app.command("prepare")(prepare)
    data_app.command("inspect")(inspect)
    app.add_typer(data_app, name="data")
