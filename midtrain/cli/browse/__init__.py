"""Browsing commands, one module per verb: list, show, search, diff, compare, validate, lint, schema, cp, new.

None of them imports torch, transformers, datasets or dvc; heavy imports stay inside the commands.
"""

from __future__ import annotations

import typer

from midtrain.cli.browse import compare, cp, diff, lint, new, schema, search, show, validate
from midtrain.cli.browse import list as list_command


def register(app: typer.Typer) -> None:
    """Add the browsing commands to `app`, in the order `midtrain --help` lists them."""
    for module in (list_command, show, search, diff, compare, validate, lint, schema, cp, new):
        module.register(app)
