"""The `midtrain` command. Browsing commands import neither torch nor transformers nor datasets nor dvc.

Layout: `app.py` defines the root app and `guarded`; every command module defines its commands as
plain functions and a `register(app)` that adds them. This module imports app.py, then the command
modules, and registers them in the order `midtrain --help` lists them. No command module imports
this package's `__init__` names, so there is no import cycle.
"""

from __future__ import annotations

from midtrain.cli import browse, catalog, data, run, train
from midtrain.cli.app import app, guarded

browse.register(app)  # list, show, search, diff, compare, validate, lint, schema, cp
catalog.register(app)  # catalog markdown, catalog build
run.register(app)  # plan, reproduce, compare-runs; stage plan, data, base, midtrain, evaluate, report
train.register(app)  # train, merge
data.register(app)  # data prepare, data inspect

__all__ = ["app", "guarded", "main"]


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
