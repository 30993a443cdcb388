"""GPU memory back-off: a piece of work that does not fit is retried at half its size, never a crashed job.

Long studies share GPUs with other jobs and meet clips of unusual length; one CUDA out-of-memory error
should cost a retry, not a night's work. Three things make the retry work:

- it happens *after* the `except` block: a pending exception holds the frames of the failed call (the
  statistics being built, the whole autograd graph), so a retry inside the handler starts with that memory
  still taken, fails again, and cascades down to a crash;
- what shrinks is what overflowed (the caller says: clips per batch for capture, rows per decoder forward
  for interventions);
- the size that fit is kept for the rest of the job (`Fit`), so later pieces do not pay a failed attempt
  each. It never grows back: clips are sorted by duration, so later pieces are longer, not shorter.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")


@dataclass
class Fit:
    """The largest piece (`size` items: clips, rows, ...) that fits; halves on out-of-memory, for the whole job."""

    size: int
    what: str = "items"
    asked: int = field(init=False)
    tried: list[int] = field(default_factory=list)  #: every attempted piece size, in order (what ran and what failed)
    overflows: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"{self.what}: a piece must hold at least one item, not {self.size}")
        self.asked = self.size

    def overflowed(self, n: int) -> None:
        """A piece of `n` did not fit: from now on pieces hold at most half of it."""
        self.overflows += 1
        self.size = min(self.size, max(1, n // 2))
        log.warning("CUDA out of memory on %d %s; retrying with %d (kept for the rest of the job)", n, self.what,
                    self.size)


def free_device_memory() -> None:
    """Return freed blocks to the device (call with no reference to the failed attempt left)."""
    gc.collect()  # cycles between frames and closures of the failed call
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def in_pieces(fn: Callable[[Sequence[Item]], T], items: Sequence[Item], fit: Fit, *, unit: int = 1) -> list[T]:
    """`fn` over consecutive pieces of `items`, each of at most `fit.size`, in order; a piece that runs out of
    device memory is retried at half its size once the failed attempt is gone (`fit` remembers the size).

    `unit`: while `fit.size` >= `unit`, pieces hold whole multiples of it (e.g. all rows of a condition), so a run
    that never overflows cuts the work exactly as before; below it, any size. A piece of one item that does not
    fit raises: nothing smaller can be tried here (a caller may shrink something else).
    """
    out: list[T] = []
    i = 0
    while i < len(items):
        n = min(fit.size if fit.size < unit else fit.size // unit * unit, len(items) - i)
        fit.tried.append(n)
        try:
            out.append(fn(items[i:i + n]))
            i += n
            continue
        except torch.cuda.OutOfMemoryError:
            if n == 1:
                raise
            fit.overflowed(n)
        # here the exception and the failed call's frames are released: the retry starts with their memory free
        free_device_memory()
    return out
