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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    #: `size` counts tokens (items × padded length), not items
    tokens: bool = False
    #: at most this many items a piece, whatever the size (by tokens)
    max_items: int | None = None
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


#: Decoder memory beyond the weights, in bytes per token of the padded batch, for each way of running the model:
#: (per decoder layer, fixed), each as (bytes per hidden unit, bytes per MLP neuron), in bf16. The largest of the
#: three families (Qwen2.5-Omni, Audio Flamingo 3, Qwen2-Audio; within 10 % of each other) measured by
#: `benchmarks/memory_per_token.py` on tiny bf16 models of the real classes (peaks of live tensor storage at 2 and
#: 4 layers, three sizes; benchmarks/out/memory_per_token.json, 2026-12-05). Not counted: kernel workspaces and
#: the allocator's rounding (hence `token_budget`'s fill factor), the audio tower (it runs before the decoder).
#: Generation's per-layer term is the tiny models' KV cache (half as many KV heads as heads): a 7B's is smaller.
MEMORY_PER_TOKEN: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "score": ((0.0, 0.0), (9.5, 6.1)),
    "capture": ((0.0, 0.2), (9.4, 13.2)),
    "attribution": ((20.5, 6.4), (11.2, 7.1)),
    "generate": ((2.0, 0.0), (9.2, 6.2)),
}


def bytes_per_token(way: str, layers: int, hidden: int, mlp: int, dtype_bytes: int = 2) -> float:
    """Decoder memory per token of a batch (`MEMORY_PER_TOKEN`) for `way` at a model's shape and dtype."""
    (lh, lm), (fh, fm) = MEMORY_PER_TOKEN[way]
    return (layers * (lh * hidden + lm * mlp) + fh * hidden + fm * mlp) * dtype_bytes / 2


def token_budget(model: torch.nn.Module, layers: int, hidden: int, mlp: int, way: str, *,
                 free_bytes: int | None = None, fill: float = 0.6) -> tuple[int | None, str]:
    """Tokens per batch (clips × padded length) that fit in `fill` of the device's free memory, and how that was
    found; None where the free memory is unknown (a CPU: batches are then counted in clips)."""
    param = next(model.parameters())
    if free_bytes is None:
        if param.device.type != "cuda":
            return None, "no device memory to size batches by (CPU)"
        free_bytes = torch.cuda.mem_get_info(param.device)[0]
    per_token = bytes_per_token(way, layers, hidden, mlp, param.element_size())
    budget = max(1, int(fill * free_bytes / per_token))
    return budget, (f"{budget} tokens = {fill} x {free_bytes / 2**30:.1f} GiB free / {per_token / 2**10:.1f} KiB "
                    f"per token ({way}, MEMORY_PER_TOKEN)")


def free_device_memory() -> None:
    """Return freed blocks to the device (call with no reference to the failed attempt left)."""
    gc.collect()  # cycles between frames and closures of the failed call
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def piece_size(size: int, n_items: int, start: int, *, unit: int = 1, tokens: Sequence[int] | None = None,
               max_items: int | None = None) -> int:
    """How many items from `start` the next piece holds under a size limit of `size` (see `in_pieces`)."""
    if tokens is None:
        return min(size if size < unit else size // unit * unit, n_items - start)
    n, longest = 1, tokens[start]
    while start + n < n_items and n < (max_items or n_items):
        longest = max(longest, tokens[start + n])
        if (n + 1) * longest > size:
            break
        n += 1
    return n


def in_pieces(fn: Callable[[Sequence[Item]], T], items: Sequence[Item], fit: Fit, *, unit: int = 1,
              ahead: Callable[[Sequence[Item]], None] | None = None, tokens: Sequence[int] | None = None,
              max_items: int | None = None) -> list[T]:
    """`fn` over consecutive pieces of `items`, each of at most `fit.size`, in order; a piece that runs out of
    device memory is retried at half its size once the failed attempt is gone (`fit` remembers the size).
    `ahead(next_piece)` is told the piece that will follow (at the current size) before each piece runs, so its
    host preparation can start (`Prefetcher`).
    `tokens` (one per item, items sorted by length): `fit.size` is then a token budget, and a piece holds as many
    items as fit in it once padded to the piece's longest (at least one, at most `max_items`).

    `unit`: while `fit.size` >= `unit`, pieces hold whole multiples of it (e.g. all rows of a condition), so a run
    that never overflows cuts the work exactly as before; below it, any size. A piece of one item that does not
    fit raises: nothing smaller can be tried here (a caller may shrink something else).
    """
    out: list[T] = []
    i = 0

    def size(start: int) -> int:
        return piece_size(fit.size, len(items), start, unit=unit, tokens=tokens, max_items=max_items)

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
            fit.overflowed(n if tokens is None else n * max(tokens[i:i + n]))
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
        self._ahead: dict[tuple[int, int], Future] = {}
        self.prepare_s = self.wait_s = 0.0

    def _timed(self, piece: range) -> tuple[Prepared, float]:
        t0 = time.perf_counter()
        return self.prepare(piece), time.perf_counter() - t0

    def ahead(self, piece: range) -> None:
        if (piece.start, piece.stop) not in self._ahead:
            self._ahead[(piece.start, piece.stop)] = self._pool.submit(self._timed, piece)

    def get(self, piece: range) -> Prepared:
        t0 = time.perf_counter()
        future = self._ahead.pop((piece.start, piece.stop), None)
        for key in [k for k in self._ahead if k[0] <= piece.start]:  # announced at another size: never asked
            self._ahead.pop(key).cancel()
        if future is not None:
            out, spent = future.result()
        else:  # not announced, or announced at another size (after a back-off)
            out, spent = self._timed(piece)
        self.wait_s += time.perf_counter() - t0
        self.prepare_s += spent
        return out

    @property
    def hidden_share(self) -> float:
        return max(0.0, 1.0 - self.wait_s / self.prepare_s) if self.prepare_s > 0 else 0.0

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
