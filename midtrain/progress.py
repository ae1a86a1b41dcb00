"""Progress reporting: a Rich bar with ETA on a terminal, plain periodic lines otherwise (CI, logs, DVC)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator


def is_tty() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "", enabled: bool = True) -> Iterator[Callable[[float], None]]:
    """Yields `advance(amount)`. Plain mode prints at most every 10% (or every 5 s without a total)."""
    if not enabled:
        yield lambda amount: None
        return
    if is_tty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(description, total=total)
            yield lambda amount: progress.advance(task, amount)
        return
    state = {"done": 0.0, "next": 0.1, "last": time.monotonic()}
    start = time.monotonic()

    def advance(amount: float) -> None:
        state["done"] += amount
        now = time.monotonic()
        if total:
            fraction = state["done"] / total
            if fraction >= state["next"] or state["done"] >= total:
                rate = state["done"] / max(now - start, 1e-9)
                eta = (total - state["done"]) / rate if rate > 0 else 0
                print(f"{description}: {fraction:4.0%} ({state['done']:,.0f}/{total:,.0f}{unit}, eta {eta:,.0f}s)", file=sys.stderr, flush=True)
                while state["next"] <= fraction:
                    state["next"] += 0.1
        elif now - state["last"] >= 5:
            print(f"{description}: {state['done']:,.0f}{unit}", file=sys.stderr, flush=True)
            state["last"] = now

    yield advance
    print(f"{description}: done in {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
