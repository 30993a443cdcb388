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
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")
Prepared = TypeVar("Prepared")


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


def in_pieces(fn: Callable[[Sequence[Item]], T], items: Sequence[Item], fit: Fit, *, unit: int = 1,
              ahead: Callable[[Sequence[Item]], None] | None = None) -> list[T]:
    """`fn` over consecutive pieces of `items`, each of at most `fit.size`, in order; a piece that runs out of
    device memory is retried at half its size once the failed attempt is gone (`fit` remembers the size).
    `ahead(next_piece)` is told the piece that will follow (at the current size) before each piece runs, so its
    host preparation can start (`Prefetcher`).

    `unit`: while `fit.size` >= `unit`, pieces hold whole multiples of it (e.g. all rows of a condition), so a run
    that never overflows cuts the work exactly as before; below it, any size. A piece of one item that does not
    fit raises: nothing smaller can be tried here (a caller may shrink something else).
    """
    out: list[T] = []
    i = 0

    def size(start: int) -> int:
        return min(fit.size if fit.size < unit else fit.size // unit * unit, len(items) - start)

    while i < len(items):
        n = size(i)
        fit.tried.append(n)
        if ahead is not None and i + n < len(items):
            ahead(items[i + n:i + n + size(i + n)])
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


class Prefetcher(Generic[Prepared]):
    """Host preparation (audio loading, feature extraction, tokenisation) of the next piece in a background
    thread while the device runs the current one: the GPU need not wait for the CPU between batches.

    `get(piece)` returns `prepare(piece)`: the one made in the background if `ahead(piece)` announced exactly
    that piece (a back-off that changed the size makes it prepare again, here), else made now. Pieces are ranges
    (compared by start and stop). Counts the preparation's own seconds and the seconds `get` made the caller
    wait: `hidden_share` = 1 − wait / preparation (the share of host work hidden behind the device's)."""

    def __init__(self, prepare: Callable[[range], Prepared]):
        self.prepare = prepare
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._ahead: tuple[tuple[int, int], Future] | None = None
        self.prepare_s = self.wait_s = 0.0

    def _timed(self, piece: range) -> tuple[Prepared, float]:
        t0 = time.perf_counter()
        return self.prepare(piece), time.perf_counter() - t0

    def ahead(self, piece: range) -> None:
        self._ahead = ((piece.start, piece.stop), self._pool.submit(self._timed, piece))

    def get(self, piece: range) -> Prepared:
        t0 = time.perf_counter()
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == (piece.start, piece.stop):
            out, spent = ahead[1].result()
        else:
            out, spent = self._timed(piece)
        self.wait_s += time.perf_counter() - t0
        self.prepare_s += spent
        return out

    @property
    def hidden_share(self) -> float:
        return max(0.0, 1.0 - self.wait_s / self.prepare_s) if self.prepare_s > 0 else 0.0

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
