"""Running recipes: `midtrain plan`, `midtrain reproduce`, `midtrain microanneal`, `midtrain compare-runs`, and `midtrain stage ...`
(the commands dvc.yaml runs). The planning and the pipeline live in midtrain.plan and midtrain.pipeline."""

from __future__ import annotations

import typer

from midtrain.cli.run import compare_runs, microanneal, plan, reproduce, stage


def register(app: typer.Typer) -> None:
    """Add the run commands and the `stage` group to `app`, in the order `midtrain --help` lists them."""
    for module in (plan, reproduce, microanneal, compare_runs, stage):
        module.register(app)
