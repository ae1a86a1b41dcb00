"""Third-party noise the user can do nothing about goes to a log file, not the terminal.

transformers' generation reminders and weight-loading bars, datasets' and lm-eval's INFO lines,
huggingface_hub's retries and Python warnings raised inside those libraries are written to
`logs/third-party.log` (under the project root) with a timestamp; midtrain's own messages and
warnings still reach the terminal. Set MIDTRAIN_VERBOSE=1 to see everything.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TextIO

THIRD_PARTY = (
    "transformers",
    "datasets",
    "huggingface_hub",
    "lm_eval",
    "lm-eval",
    "accelerate",
    "torch",
    "evaluate",
    "urllib3",
    "httpx",
    "filelock",
    "fsspec",
    "matplotlib",
    "sqlitedict",
    "absl",
)
_installed: list[Path] = []


def quiet_third_party(log_dir: Path | None = None) -> Path | None:
    """Route third-party logging and warnings to `log_dir/third-party.log`. Idempotent."""
    if os.environ.get("MIDTRAIN_VERBOSE"):
        return None
    if _installed:
        return _installed[0]
    directory = Path(log_dir or "logs")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(directory / "third-party.log", encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()  # an unwritable log never stops the work
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # TOKENIZERS_PARALLELISM is left alone: the data stage encodes on every core (a training process
    # turns it off itself, before its data loading could fork)
    _capture_warnings(handler)
    try:  # transformers keeps its own handler on its root logger; replace it once it is imported
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.add_handler(handler)
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    _installed.append(directory / "third-party.log")
    return _installed[0]


def _capture_warnings(handler: logging.Handler) -> None:
    """Warnings raised from third-party modules go to the log; midtrain's own stay on stderr."""
    shown = warnings.showwarning
    log = logging.getLogger("py.warnings.third_party")
    log.handlers = [handler]
    log.propagate = False

    own = str(Path(__file__).resolve().parent)

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if str(filename).startswith(own):
            shown(message, category, filename, lineno, file, line)
        else:
            log.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)

    warnings.showwarning = show
