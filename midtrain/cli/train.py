"""`midtrain train` (one run of one stage, optionally under torchrun), `midtrain merge` and `midtrain export`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from midtrain.cli.app import guarded
from midtrain.errors import MidtrainError


@guarded
def train(
    spec: Path = typer.Argument(..., help="A run specification (JSON) written by `midtrain plan --write`."),
    nproc_per_node: int = typer.Option(
        1, "--nproc-per-node", help="Processes (GPUs) on this node; >1 launches torchrun."
    ),
    nnodes: int = typer.Option(1, "--nnodes", help="Nodes taking part (multi-node: run the same command on each)."),
    node_rank: int = typer.Option(0, "--node-rank", help="This node's index, 0 .. nnodes-1."),
    master_addr: str = typer.Option("127.0.0.1", "--master-addr", help="Address of node 0."),
    master_port: int = typer.Option(29500, "--master-port", help="A free port on node 0."),
    threads: int | None = typer.Option(
        None, "--threads", help="torch threads per process (default: cores / processes)."
    ),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start from scratch even if checkpoints exist."),
    async_checkpoint: bool = typer.Option(
        False,
        "--async-checkpoint",
        help="Multi-process runs: write checkpoints in the background while training continues "
        "(also MIDTRAIN_ASYNC_CHECKPOINT=1).",
    ),
) -> None:
    """Train one run of one stage. Rerunning the same command resumes from the newest good checkpoint.

    Single process (CPU or one GPU) by default; with --nproc-per-node N it launches torchrun itself:
    DDP for small models, FSDP2 (`fully_shard`) for models of a billion parameters or more on GPUs
    (or `strategy` in the run file). Only rank 0 logs (dvclive) and writes; checkpoints of
    multi-process runs are sharded (torch.distributed.checkpoint), every rank writing its part, and
    resume on any number of processes.

    [bold]Examples[/bold]

      midtrain train runs/anneal-0.json
      midtrain train runs/anneal-0.json --nproc-per-node 8
      # two nodes, run on each with its own --node-rank:
      midtrain train runs/anneal-0.json --nproc-per-node 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1
    """
    from midtrain.train.config import RunSpec

    RunSpec.load(spec)  # fail fast, in this process, on a bad specification
    argv = [str(spec)] + (["--no-resume"] if no_resume else [])
    if async_checkpoint:
        import os

        from midtrain.train.dcp import ASYNC_ENV

        os.environ[ASYNC_ENV] = "1"  # torchrun's ranks inherit it
    if nproc_per_node > 1 or nnodes > 1:
        from midtrain.train.distributed import launch

        status = launch(argv, nproc_per_node, nnodes, node_rank, master_addr, master_port, threads)
        if status:
            raise typer.Exit(status)
        return
    if threads:
        import os

        os.environ["MIDTRAIN_THREADS"] = str(threads)
    from midtrain.train.entry import main as entry

    status = entry(argv)
    if status:
        raise typer.Exit(status)


@guarded
def merge(
    out: Path = typer.Argument(..., help="Directory for the merged model."),
    inputs: list[Path] = typer.Argument(..., help="Two or more model directories (HF format)."),
    weights: str | None = typer.Option(
        None, "--weights", help="Comma-separated weights summing to 1 (default: uniform)."
    ),
) -> None:
    """Average saved models tensor by tensor.

    A uniform soup (OLMo 2's data orders) or a weighted linear merge (SmolLM3); peak memory stays
    near one model.

    [bold]Examples[/bold]

      midtrain merge runs/soup runs/anneal-0/model runs/anneal-1/model runs/anneal-2/model
      midtrain merge runs/merged runs/a/model runs/b/model --weights 0.9,0.1
    """
    from midtrain.train.merge import merge_models

    parsed = None
    if weights:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise MidtrainError.single("weights must be numbers", found=weights) from None
    record = merge_models(list(inputs), out, parsed)
    typer.echo(f"merged {len(inputs)} models ({record['tensors']} tensors) into {out}", file=sys.stdout)


@guarded
def export(
    checkpoint: Path = typer.Argument(
        ..., help="A checkpoint (RUN/checkpoints/step-NNNNNNN), a run's checkpoints/ directory or a run directory."
    ),
    out: Path = typer.Argument(..., help="Directory for the Hugging Face model (replaced atomically)."),
    weights: str = typer.Option("model", "--weights", help="Which weights: model, ema or polyak (the run's averages)."),
    max_shard_size: str = typer.Option(
        "5GB", "--max-shard-size", help="Largest safetensors file; above it the model is sharded (with an index)."
    ),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="Tokenizer directory to include (default: the run's, when it still exists)."
    ),
) -> None:
    """Write a checkpoint as a Hugging Face model directory that `from_pretrained` loads.

    Reads either checkpoint format (a single-process run's files or a distributed run's DCP shards,
    whatever number of processes wrote them) after verifying it, and writes safetensors files one at
    a time, so memory stays near one file (--max-shard-size), not the model. A run directory or its
    checkpoints/ directory means its newest checkpoint that verifies.

    [bold]Examples[/bold]

      midtrain export runs/anneal-0/checkpoints/step-0001200 exported/anneal-0
      midtrain export runs/anneal-0 exported/anneal-0-ema --weights ema
      midtrain export runs/anneal-0 exported/anneal-0 --max-shard-size 2GB --tokenizer data/tokenizer
    """
    from midtrain.train.export import describe, parse_size
    from midtrain.train.export import export as export_checkpoint

    record = export_checkpoint(checkpoint, out, weights, parse_size(max_shard_size), tokenizer)
    typer.echo(describe(record), file=sys.stdout)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("merge")(merge)
    app.command("export")(export)
