"""The root `midtrain` Typer app and the `guarded` command decorator.

Imports no command module: `midtrain.cli` imports this, then each command module, and calls that
module's `register(app)`. A command module imports `guarded` from here, never from `midtrain.cli`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from midtrain import __version__
from midtrain.errors import MidtrainError

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="midtrain",
    help=(
        "Published LLM mid-training recipes as validated data: browse them, plan them at a scale, "
        "reproduce them.\n\n"
        "Start with [bold]midtrain list[/bold], then [bold]midtrain show ID[/bold]."
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"midtrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Published LLM mid-training recipes as validated data."""


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Command decorator: a MidtrainError or an OSError becomes a located message on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except MidtrainError as exc:
            typer.echo(f"error: {exc.render()}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            # EACCES, EROFS, ENOSPC, EEXIST, EISDIR, ENOTDIR, ENAMETOOLONG, ...: the path and what to do
            from midtrain.io import os_error

            typer.echo(f"error: {os_error(exc).render()}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper
