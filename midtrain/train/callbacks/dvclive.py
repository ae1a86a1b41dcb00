"""dvclive metrics of a run (rank 0 only), in `out/dvclive`: train/loss, train/lr, train/grad_norm,
train/tokens_seen and train/tokens_per_s, one row every `log_every` steps and at the last step.

Rows are keyed by completed steps. On resume, rows logged after the checkpoint (by the killed
process) are dropped first, so the log equals an uninterrupted run's; a run that starts from
scratch starts its log from scratch.

dvclive writes every row to disk at once (about 14 ms a row here, more on a network filesystem),
so a thread of its own writes them while the next step computes. Every row up to a checkpoint is
on disk before the checkpoint is written, and all of them before the loop ends; an error in the
writer (a full disk, say) is raised in the training thread at the next step."""

from __future__ import annotations

import csv
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midtrain.train.callbacks.base import Callback

if TYPE_CHECKING:
    from midtrain.train.loop import StepResult, Trainer


class DVCLive(Callback):
    def __init__(self) -> None:
        self.live: Any = None
        self._rows: queue.Queue[tuple[int, dict[str, float]] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.dist.main:
            return
        directory, step = trainer.out / "dvclive", trainer.step
        if step > 0:
            truncate_tsv(directory, step)
            _drop_torn_summary(directory)
        else:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
        from dvclive import Live

        self.live = Live(str(directory), resume=step > 0, save_dvc_exp=False, dvcyaml=None)
        self._error = None
        self._writer = threading.Thread(target=self._write, name="midtrain-dvclive", daemon=True)
        self._writer.start()

    def _write(self) -> None:
        """The writer thread: rows in order until None; after an error, the rest are dropped."""
        while (row := self._rows.get()) is not None:
            if self._error is None:
                self._write_row(*row)
            self._rows.task_done()
        self._rows.task_done()

    def _write_row(self, step: int, metrics: dict[str, float]) -> None:
        try:
            self.live.step = step
            for name, value in metrics.items():
                self.live.log_metric(f"train/{name}", value)
            self.live.next_step()
        except BaseException as exc:  # raised in the training thread by _check
            self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def flush(self) -> None:
        """Wait until every row handed over so far is on disk; raise the writer's error, if any."""
        if self._writer is not None:
            self._rows.join()
        self._check()

    def on_step_end(self, trainer: Trainer, step: int, result: StepResult) -> None:
        if self._writer is None or (step % trainer.spec.log_every and step != trainer.spec.steps):
            return
        self._check()
        metrics = {
            "loss": result.loss,
            "lr": trainer.lr(step - 1),
            "grad_norm": result.grad_norm,
            "tokens_seen": trainer.tokens_seen,
            "tokens_per_s": result.tokens / max(result.seconds, 1e-9),
        }
        self._rows.put((step, metrics))

    def on_checkpoint_save(self, trainer: Trainer) -> None:
        self.flush()  # the rows up to the checkpoint are on disk before it is
        return None

    def on_loop_end(self, trainer: Trainer) -> None:
        """Write what is queued and stop the writer; an error of its is raised by the final
        checkpoint's flush, not here, where it would hide the error that ended a failed loop."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        self._rows.put(None)
        writer.join()

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self._check()
        if self.live is not None:
            self.live.end()
            self.live = None


def truncate_tsv(directory: Path, step: int) -> None:
    """Keep the rows of steps 1..`step` of every metric (a row cut short by a kill is dropped)."""
    for path in (directory / "plots" / "metrics").rglob("*.tsv") if directory.exists() else []:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        at = header.index("step") if "step" in header else 0
        kept, last = [], 0
        for row in body:
            try:
                row_step = int(float(row[at]))
                float(row[-1])
            except (ValueError, IndexError):
                continue
            if len(row) == len(header) and last < row_step <= step:
                kept.append(row)
                last = row_step
        with open(path, "w", newline="") as handle:
            csv.writer(handle, delimiter="\t").writerows([header, *kept])


def _drop_torn_summary(directory: Path) -> None:
    """dvclive rewrites metrics.json in place; a SIGKILL mid-write leaves it empty or cut, and
    dvclive's resume would then fail to parse it. It is only the latest values, rewritten at the
    next logged step, so a torn one is removed."""
    import json

    summary = directory / "metrics.json"
    try:
        json.loads(summary.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        summary.unlink(missing_ok=True)
