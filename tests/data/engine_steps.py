"""Datatrove steps the data-engine tests put into the pipeline (`EngineOptions.extra_steps`) to break
one task on its first attempt. They live in an importable module: the engine's worker processes
unpickle the pipeline by reference."""

from __future__ import annotations

import os
import time
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep


class BreakOnce(PipelineStep):
    """On task `rank`, at the first document of stream number `job` or later, unless `marker`
    exists: create `marker`, then raise (`mode="raise"`) or stop until killed (`mode="stall"`)."""

    type = "🧪 - TEST"
    name = "break once"

    def __init__(self, marker: str, rank: int, job: int, mode: str = "raise"):
        super().__init__()
        self.marker, self.rank, self.job, self.mode = marker, rank, job, mode

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data or ():
            if rank == self.rank and doc.metadata["job"] >= self.job and not Path(self.marker).exists():
                Path(self.marker).write_text(str(os.getpid()))
                if self.mode == "raise":
                    raise RuntimeError("injected failure")
                while True:  # the test kills this process group
                    time.sleep(1)
            yield doc
