"""A GPU simulated on the CPU, for tests: a device-memory budget, and a device that tags its tensors.

No GPU runs in CI, yet the GPU path has failure modes that a CPU run never shows: out-of-memory errors, and
tensors left on the wrong device. Both are simulated here with real tensors computed on the CPU.

- `SimulatedMemory` (a fake of the CUDA allocator's limit): memory in use is the bytes of every storage made
  while it is active and still alive (so what a pending exception keeps alive counts, as on a GPU); before each
  decoder layer runs, a forward needs `cost × rows × positions` more; above the budget it raises
  `torch.cuda.OutOfMemoryError`, as CUDA would.
- `SimulatedDevice` (a fake of device placement): tensors made from the model's parameters or moved by the code
  under test are tagged "device"; every torch call propagates the tag, and the calls that a real GPU would
  refuse or pay for are recorded: mixing tagged and untagged tensors, `.numpy()` of a tagged tensor, and host
  synchronisations (`.item()`, `.tolist()`, `.cpu()`, `bool()` of a tagged tensor), by call site.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _HostCopies(TorchFunctionMode):
    """`.cpu()` / `.numpy()` move a result to the host: on a GPU that copy is host memory, so it stops counting."""

    def __init__(self, memory: "SimulatedMemory"):
        super().__init__()
        self.memory = memory

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.Tensor.cpu, torch.Tensor.numpy) and isinstance(args[0], torch.Tensor):
            self.memory._live.pop(args[0].untyped_storage().data_ptr(), None)
        return out


class SimulatedMemory(TorchDispatchMode):
    """Raise CUDA's out-of-memory error when live storages plus a decoder layer's need exceed `budget` bytes.

    Everything runs on the CPU, so results copied to the host (`.cpu()`, `.numpy()`) leave the count."""

    def __init__(self, layers: list[nn.Module], budget: float, cost: float):
        super().__init__()
        self.layers, self.budget, self.cost = layers, budget, cost
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0.0
        #: (rows, positions, fitted) per decoder forward: what was attempted at layer 0, and whether it ran through
        self.forwards: list[list] = []
        self._handles: list = []

    # --- memory in use -------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    s = t.untyped_storage()
                    known = self._live.get(s.data_ptr())
                    if (known is None or known[0].expired()) and s.nbytes() > 0:  # new (perhaps at a freed address)
                        self._live[s.data_ptr()] = (StorageWeakRef(s), s.nbytes())
        return out

    def in_use(self) -> int:
        """Bytes of the storages made under this mode that are still alive."""
        for ptr in [p for p, (ref, _) in self._live.items() if ref.expired()]:
            del self._live[ptr]
        return sum(n for _, n in self._live.values())

    # --- the budget, checked before each decoder layer -----------------------------------------
    def _check(self, layer: int, hidden: torch.Tensor) -> None:
        rows, positions = hidden.shape[0], hidden.shape[1]
        if layer == 0:
            if self.forwards and self.forwards[-1][2] is None:
                self.forwards[-1][2] = True
            self.forwards.append([rows, positions, None])
        need = self.in_use() + self.cost * rows * positions
        self.peak = max(self.peak, need)
        if need > self.budget:
            self.forwards[-1][2] = False
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory (simulated): layer {layer} needs {need / 2**20:.2f} MiB of a "
                f"{self.budget / 2**20:.2f} MiB budget")
        if layer == len(self.layers) - 1:
            self.forwards[-1][2] = True

    def __enter__(self):
        for i, layer in enumerate(self.layers):
            def hook(_m, args, kwargs, i=i):
                self._check(i, args[0] if args else kwargs["hidden_states"])
            self._handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
        self._host = _HostCopies(self)
        self._host.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        out = super().__exit__(*exc)
        self._host.__exit__(*exc)
        return out

    def attempts(self) -> list[tuple[int, bool]]:
        """(rows, fitted) of every decoder forward that started (a continuation pass counts as its own)."""
        return [(r, bool(ok)) for r, _, ok in self.forwards]
