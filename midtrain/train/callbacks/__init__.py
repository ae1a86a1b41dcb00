"""Trainer callbacks: the `Callback` interface and the built-in ones every run has.

    Trainer(spec, callbacks=[MyCallback()])

adds callbacks after the built-in ones; one of a built-in's class replaces it (for example
`Throughput(peak_flops=...)` for MFU). The throughput meter always runs last, so the iteration it
times includes every other callback's work.
"""

from __future__ import annotations

from collections.abc import Iterable

from midtrain.train.callbacks.averaging import Averaging
from midtrain.train.callbacks.base import Callback
from midtrain.train.callbacks.dvclive import DVCLive
from midtrain.train.callbacks.progress import ProgressBar
from midtrain.train.callbacks.throughput import Throughput
from midtrain.train.checkpoint import OPTIONAL_FILES

__all__ = ["Averaging", "Callback", "DVCLive", "ProgressBar", "Throughput", "with_defaults"]


def with_defaults(extra: Iterable[Callback] = ()) -> list[Callback]:
    """The built-in callbacks (averaging, dvclive, progress), then `extra`, then the throughput meter;
    a callback in `extra` of a built-in's class takes that one's place."""
    built_in: list[Callback] = [Averaging(), DVCLive(), ProgressBar(), Throughput()]
    extra = list(extra)
    for index, default in enumerate(built_in):
        given = [c for c in extra if type(c) is type(default)]
        if given:
            built_in[index] = given[0]
            extra.remove(given[0])
    callbacks = [*built_in[:3], *extra, built_in[3]]
    files = [c.checkpoint_file for c in callbacks if c.checkpoint_file is not None]
    if len(set(files)) != len(files) or not set(files) <= set(OPTIONAL_FILES):
        raise ValueError(f"callbacks' checkpoint files must be distinct, of {', '.join(OPTIONAL_FILES)}; found {files}")
    return callbacks
