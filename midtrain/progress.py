"""Progress reporting: a Rich bar with ETA on a terminal, plain periodic lines otherwise (CI, logs, DVC).

One implementation, `Reporter`, serves every long task: data preparation and evaluation through
`progress_bar`, the trainer through its progress callback (midtrain/train/callbacks/progress.py).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress

# Plain-mode lines; fields: description, done, total, unit, fraction, eta (seconds), info.
PERCENT_LINE = "{description}: {fraction:4.0%} ({done:,.0f}/{total:,.0f}{unit}, eta {eta:,.0f}s)"
STEP_LINE = "{description}: step {done}/{total} {info} · eta {eta:,.0f}s"
QUIET_SECONDS = 5  # without a total, a plain line at most this often


def is_tty() -> bool:
    return sys.stderr.isatty()


class Reporter:
    """Progress of one task from `start` to `total`: a Rich bar on a terminal; otherwise a line
    (`line`, to `stream`) each time another tenth of the way is done (`every` units, when given),
    and every QUIET_SECONDS without a total. `header` is printed first, and `close(footer=True)`
    prints how long it took (plain mode)."""

    def __init__(
        self,
        description: str,
        total: float | None,
        *,
        start: float = 0,
        unit: str = "",
        enabled: bool = True,
        line: str = PERCENT_LINE,
        every: float | None = None,
        stream: str = "stderr",
        header: str | None = None,
    ):
        self.description, self.total, self.start, self.unit, self.enabled = description, total, start, unit, enabled
        self.line, self.stream, self.done = line, stream, start
        self.interval = every if every is not None else (total / 10 if total else None)
        self.tenths = 1  # the next plain line is due at start + tenths × interval
        self.started = self.last = time.monotonic()
        self.bar: Progress | None = None
        if enabled and is_tty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            ]
            self.bar = Progress(*columns, transient=False)
            self.bar.start()
            # rich annotates add_task's `completed` as int, though its tasks count in floats (update takes one)
            self.task = self.bar.add_task(description, total=total, completed=start, info="")  # type: ignore[arg-type]
        elif enabled and header is not None:
            self._print(header)

    def _print(self, text: str) -> None:
        print(text, file=getattr(sys, self.stream), flush=True)

    def advance(self, amount: float, info: str = "") -> None:
        self.update(self.done + amount, info)

    def update(self, done: float, info: str = "") -> None:
        """`done` units of `total` are finished; `info` is shown beside the bar (and in step lines)."""
        self.done = done
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=info)
            return
        now = time.monotonic()
        if self.total and self.interval:
            if done >= self.start + self.tenths * self.interval or done >= self.total:
                rate = (done - self.start) / max(now - self.started, 1e-9)
                eta = (self.total - done) / rate if rate > 0 else 0
                self._print(
                    self.line.format(
                        description=self.description,
                        done=done,
                        total=self.total,
                        unit=self.unit,
                        fraction=done / self.total,
                        eta=eta,
                        info=info,
                    )
                )
                while self.start + self.tenths * self.interval <= done:
                    self.tenths += 1
        elif now - self.last >= QUIET_SECONDS:
            self._print(f"{self.description}: {done:,.0f}{self.unit}")
            self.last = now

    def close(self, footer: bool = False) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif self.enabled and footer:
            self._print(f"{self.description}: done in {time.monotonic() - self.started:.1f}s")


@contextlib.contextmanager
def progress_bar(
    description: str, total: float | None, unit: str = "", enabled: bool = True
) -> Iterator[Callable[[float], None]]:
    """Yields `advance(amount)`. Plain mode prints at most every 10% (or every 5 s without a total),
    and how long it took at the end."""
    reporter = Reporter(description, total, unit=unit, enabled=enabled)
    try:
        yield lambda amount: reporter.advance(amount)
    except BaseException:
        reporter.close()
        raise
    reporter.close(footer=True)
