"""GPU memory back-off: a batch that does not fit is split in halves and retried, never a crashed job.

Long studies share GPUs with other jobs and meet clips of unusual length; one CUDA out-of-memory
error should cost a retry, not a night's work. The size that worked is reported so the next run can
start there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")


def split_on_oom(fn: Callable[[Sequence[Item]], T], items: Sequence[Item],
                 combine: Callable[[list[T]], T]) -> tuple[T, int]:
    """`fn(items)`, halving `items` on CUDA OOM until it fits; returns the result and the largest size that ran."""
    try:
        return fn(items), len(items)
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(items) // 2
        log.warning("CUDA out of memory on a batch of %d; retrying as %d + %d", len(items), half, len(items) - half)
        first, n1 = split_on_oom(fn, items[:half], combine)
        second, n2 = split_on_oom(fn, items[half:], combine)
        return combine([first, second]), max(n1, n2)
