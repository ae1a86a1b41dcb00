"""`midtrain train` (one run of one stage, optionally under torchrun) and `midtrain merge`."""

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
) -> None:
    """Train one run of one stage. Rerunning the same command resumes from the newest good checkpoint.

    Single process (CPU or one GPU) by default; with --nproc-per-node N it launches torchrun itself:
    DDP for small models, FSDP2 (`fully_shard`) for models of a billion parameters or more on GPUs
    (or `strategy` in the run file). Only rank 0 logs (dvclive) and writes.

    [bold]Examples[/bold]

      midtrain train runs/anneal-0.json
      midtrain train runs/anneal-0.json --nproc-per-node 8
      # two nodes, run on each with its own --node-rank:
      midtrain train runs/anneal-0.json --nproc-per-node 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1
    """
    from midtrain.train.config import RunSpec

    RunSpec.load(spec)  # fail fast, in this process, on a bad specification
    argv = [str(spec)] + (["--no-resume"] if no_resume else [])
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


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("merge")(merge)
