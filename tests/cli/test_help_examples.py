"""Every example in every command's rendered `--help` is a command line that midtrain would accept.

Help text goes through Rich markup, which silently eats anything that looks like a tag
(`components[dolmino-math].share` is shown as `components.share`): the help then shows a command
that is not the one written, or one that does not parse. So the examples are taken from the help as
rendered, not from the docstrings. Two checks per command: each `midtrain ...` command in its
examples is parsed by click exactly as a real invocation would be, without running it (an unknown
command or option, a missing required argument or a bad value fails); and every example the
docstring writes is shown exactly as written (markup escaped with `\\[`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import click
import pytest
import typer
from typer.testing import CliRunner

from midtrain.cli import app

ROOT = typer.main.get_command(app)
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "&>"}
WIDE = "250"  # wide enough that no example wraps: a wrapped line is not a command line


def command_paths(command: click.Command = ROOT, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and sub-command, as the words that name it."""
    yield path
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from command_paths(command.commands[name], (*path, name))


def rendered_help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": WIDE, "TERMINAL_WIDTH": WIDE})
    assert result.exit_code == 0, (path, result.output, result.exception)
    return result.output


def example_lines(help_text: str) -> list[str]:
    """Lines of the description that start with `midtrain ` (not the boxed panels: `stage` has a
    sub-command named `midtrain`)."""
    lines = (line.strip() for line in help_text.splitlines())
    return [line for line in lines if line.startswith("midtrain ")]


def midtrain_commands(line: str) -> list[list[str]]:
    """The `midtrain ...` commands in one shell line (`a | b`, `a && b`, `a > file`): their words."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in SHELL_OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [words for words in commands if words and words[0] == "midtrain"]


def _remaining(ctx: click.Context) -> list[str]:
    """What a group left for its sub-command (click 8.2+ keeps the sub-command's name in `_protected_args`)."""
    protected = getattr(ctx, "_protected_args", None)
    return [*(ctx.protected_args if protected is None else protected), *ctx.args]


def parse(words: list[str]) -> click.Context:
    """Parse a command line down to its leaf command, the way `midtrain` would, without running it."""
    ctx = ROOT.make_context("midtrain", words[1:], resilient_parsing=False)
    command: click.Command = ROOT
    while isinstance(command, click.Group):
        args = _remaining(ctx)
        if not args:
            raise click.UsageError(f"{ctx.command_path} needs a sub-command", ctx=ctx)
        name, sub, rest = command.resolve_command(ctx, args)
        assert name is not None and sub is not None
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        command = sub
    if ctx.args:
        raise click.UsageError(f"unexpected extra arguments {ctx.args}", ctx=ctx)
    return ctx


def resolve(path: tuple[str, ...]) -> click.Command:
    command: click.Command = ROOT
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def written_examples(path: tuple[str, ...]) -> list[str]:
    """The example lines as the docstring writes them, with Rich's `\\[` escapes read as `[`."""
    lines = (line.strip() for line in (resolve(path).help or "").splitlines())
    return [line.replace("\\[", "[") for line in lines if line.startswith("midtrain ")]


PATHS = list(command_paths())
PATH_IDS = [" ".join(path) or "midtrain" for path in PATHS]


def test_every_command_is_walked() -> None:
    assert {
        "midtrain",
        "list",
        "show",
        "plan",
        "reproduce",
        "stage",
        "stage plan",
        "data",
        "data inspect",
        "catalog build",
        "train",
        "compare-runs",
    } <= set(PATH_IDS)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_help_examples_parse(path: tuple[str, ...]) -> None:
    """Each `midtrain ...` line of the rendered help parses as a command line (none is run)."""
    for line in example_lines(rendered_help(path)):
        commands = midtrain_commands(line)
        assert commands, f"no midtrain command in example {line!r}"
        for words in commands:
            try:
                ctx = parse(words)
            except click.ClickException as exc:
                pytest.fail(
                    f"`midtrain {' '.join(path)} --help` shows an example that does not parse:\n  {line}\n  {exc.format_message()}"
                )
            assert ctx.command.name, line


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_help_shows_examples_as_written(path: tuple[str, ...]) -> None:
    """Rich markup eats `[tag]`: an example still parses with `components[dolmino-math]` cut to
    `components`, but it is then another command. Every example the docstring writes is shown as written."""
    shown = example_lines(rendered_help(path))
    for line in written_examples(path):
        assert line in shown, (
            f"`midtrain {' '.join(path)} --help` does not show the example as written (escape `[` as `\\\\[`):\n  {line}\n  shown: {shown}"
        )


def test_examples_are_found() -> None:
    """The extraction itself works: the commands that document examples show them."""
    documented = {" ".join(path) for path in PATHS if example_lines(rendered_help(path))}
    assert {
        "list",
        "show",
        "plan",
        "reproduce",
        "schema",
        "cp",
        "data inspect",
        "catalog markdown",
        "train",
    } <= documented


def test_plan_example_keeps_its_brackets() -> None:
    lines = [line for line in example_lines(rendered_help(("plan",))) if "--set" in line]
    assert lines and "components[dolmino-math].share=0.3" in lines[0]


def test_a_broken_example_fails() -> None:
    """The check can fail: an unknown option, a missing argument, an unknown command, a bad value."""
    for line in (
        "midtrain list --no-such-option",
        "midtrain show",
        "midtrain diff olmo-2-1124-7b",
        "midtrain no-such-command",
        "midtrain stage",
        "midtrain data inspect",
        "midtrain plan olmo-2-1124-7b --seed many",
        "midtrain plan olmo-2-1124-7b --set",
        "midtrain list extra-argument",
    ):
        with pytest.raises(click.ClickException):
            for words in midtrain_commands(line):
                parse(words)
    for line in (
        "midtrain list --json | jq '.[].id'",
        "midtrain schema > recipe.schema.json",
        "midtrain validate my-recipes/ && midtrain diff olmo-2-1124-7b my.yaml",
    ):
        assert midtrain_commands(line)
        for words in midtrain_commands(line):
            parse(words)


def test_escaped_markup_survives_rendering() -> None:
    """What the docstrings rely on: `\\[` shows a literal bracket, a bare `[tag]` is eaten."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(width=200, record=True)
    console.print("x[dolmino-math]y", "x\\[dolmino-math]y", escape("x[dolmino-math]y"))
    assert console.export_text().split() == ["xy", "x[dolmino-math]y", "x[dolmino-math]y"]
