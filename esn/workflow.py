"""Glue between Snakemake scripts and the library: per-rule logging and config provenance.

Scripts under `workflow/scripts/` stay thin: they read the `snakemake` object, call one library
function, and log through `setup_logging` so every rule has its log under `logs/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

#: A git commit as the hub names revisions: 40 hex digits. Branches (`main`) and tags can be moved, so remote
#: code is only run at one (checked when the plan is resolved and again at load).
COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


class _Tee:
    """Write to the terminal and the rule's log file (progress bars included)."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, data: str) -> int:
        for s in self.streams:
            s.write(data)
            s.flush()
        return len(data)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:
        return False


def setup_logging(log_path: str | Path | None) -> logging.Logger:
    """Log (and mirror stderr) into the rule's log file; returns the root logger."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115  (lives as long as the job)
        sys.stderr = _Tee(sys.__stderr__, stream)  # type: ignore[assignment]
        handlers = [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    return logging.getLogger("esn")


def put_on_pythonpath(folder: str | Path) -> None:
    """Let every job import the repository's own `esn`: jobs inherit PYTHONPATH, also in per-rule conda
    environments (where `esn` is not installed) and on SLURM nodes (sbatch exports the environment)."""
    parts = [str(folder), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))


def stable_hash(obj: Any) -> str:
    """A short hash of JSON-able data: recorded in outputs so stale results are recognised."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
