"""`midtrain compare-runs`: two reproductions side by side (midtrain.compare does the work)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from midtrain.cli.app import guarded


@guarded
def compare_runs(
    run_a: str = typer.Argument(..., help="An experiment name (`dvc exp show`), a git revision, or 'workspace'."),
    run_b: str = typer.Argument(..., help="The other one."),
    out: Path | None = typer.Option(None, "--out", help="The comparison plot (default compare/A-vs-B.png)."),
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
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60]


def register(app: typer.Typer) -> None:
    app.command("compare-runs")(compare_runs)
