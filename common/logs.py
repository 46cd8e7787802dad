"""A quiet console: Flower's and Ray's logs go to the run folder's log file.

What a user of `prunus simulate` needs on the console is the run's progress,
what went wrong (failed or rejected replies, a config that cannot work) and the
final table. Flower's INFO blocks, its deprecation notice for `run_simulation`,
Ray's start-up lines and its actor-shutdown chatter go to `RUN_DIR/run.log`
instead, or also to the console with `--verbose`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

LOG_FILE = "run.log"
LIBRARIES = ("flwr", "ray")
# where prunus itself files the libraries' messages that bypass their loggers
# (Ray's driver-side notices; see common/flower_compat.py)
LIBRARY_LOG = "prunus.libraries"


def route_library_logs(out: Path, verbose: bool) -> Path:
    """Send the libraries' log records (and Python warnings) to `out/run.log`;
    keep them on the console too only when `verbose`. Returns the log path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOG_FILE
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.captureWarnings(True)
    for name in (*LIBRARIES, "py.warnings", LIBRARY_LOG):
        logger = logging.getLogger(name)
        if not verbose:
            for console in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                            and not isinstance(h, logging.FileHandler)]:  # fmt: skip
                logger.removeHandler(console)
            logger.propagate = False
        logger.addHandler(handler)
    if not verbose:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger(LIBRARY_LOG).propagate = verbose
    prunus = logging.getLogger("prunus")  # rejected and failed replies: on the console and in the file
    prunus.addHandler(handler)
    if not any(type(h) is logging.StreamHandler for h in prunus.handlers):
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("[prunus] %(levelname)s: %(message)s"))
        prunus.addHandler(console)
    prunus.setLevel(logging.INFO)
    return path
