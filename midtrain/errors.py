"""Errors a user can act on: where (file, line, field path), what was expected, what was found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Problem:
    """One thing wrong with one input, located as precisely as we can."""

    message: str
    file: Path | None = None
    line: int | None = None  # 1-based
    path: str | None = None  # field path, e.g. "stages[0].schedule.peak_lr"
    expected: str | None = None
    found: str | None = None

    def location(self) -> str:
        where = str(self.file) if self.file else "<input>"
        if self.line is not None:
            where += f":{self.line}"
        return where

    def render(self) -> str:
        head = self.location() if self.file or self.line is not None else ""
        if self.path:
            head += f": {self.path}" if head else self.path
        text = f"{head}: {self.message}" if head else self.message
        if self.expected is not None:
            text += f"\n    expected: {self.expected}"
        if self.found is not None:
            text += f"\n    found:    {self.found}"
        return text


@dataclass
class MidtrainError(Exception):
    """Raised for user mistakes; the CLI prints `render()` and exits non-zero, never a traceback."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    @classmethod
    def single(
        cls,
        message: str,
        *,
        file: Path | None = None,
        line: int | None = None,
        path: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> MidtrainError:
        return cls([Problem(message, file=file, line=line, path=path, expected=expected, found=found)])

    def render(self) -> str:
        return "\n".join(p.render() for p in self.problems)

    def __str__(self) -> str:
        return self.render()


def short(value: object, limit: int = 60) -> str:
    """A one-line, bounded representation of a found value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


FieldPath = tuple[str | int, ...]
"""A path to a field in a recipe: ("stages", 0, "schedule")."""
FieldProblem = tuple[FieldPath, str]
"""A problem at a field path: (path, message)."""


class LocatedErrors(ValueError):
    """Raised inside model validators to report several problems, each at its own field path.

    Pydantic keeps the exception in the error's context, so the loader can place each one on its line.
    """

    def __init__(self, items: list[FieldProblem]):
        self.items = items
        super().__init__("; ".join(message for _, message in items))
