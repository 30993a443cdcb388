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


#: The simulated GPU: a CPU device with an index, so it differs from the host's `cpu` while holding real CPU data.
DEVICE = torch.device("cpu", 0)
_TAG = "_esn_simulated_device"
_DEVICE_GET, _GRAD_GET = torch.Tensor.device.__get__, torch.Tensor.grad.__get__  # compare with ==, not `is`
#: Calls that make the host wait for the device (the result's values are needed on the host).
SYNCS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy"}
#: Calls that may take a host tensor beside a device one on a real GPU (an index, a copy's source) at the price
#: of a host-to-device copy.
COPYING = {"__getitem__", "__setitem__", "copy_", "to", "index_put_", "index_put"}
#: Factories that make a tensor like their first argument unless told another device.
LIKE = {"zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like", "new_zeros", "new_ones",
        "new_full", "new_empty", "new_tensor"}


def on_device(t: torch.Tensor) -> bool:
    return getattr(t, _TAG, False)


def _tag(t: torch.Tensor, device: bool) -> None:
    try:
        setattr(t, _TAG, device)
    except (AttributeError, RuntimeError):
        pass


def _site() -> str:
    """Where the package under test made the call: its innermost frame in esn/ (and the frame that made it)."""
    frames = [f for f in traceback.extract_stack() if "/torch/" not in f.filename and "simulated_gpu" not in f.filename]
    if not frames:
        return "?"
    inner = frames[-1]
    ours = next((f for f in reversed(frames) if "/esn/" in f.filename), inner)
    where = f"{ours.filename.split('/esn/')[-1] if '/esn/' in ours.filename else ours.filename}:{ours.lineno} ({ours.name})"
    return where if ours is inner else f"{where} via {inner.filename.split('/')[-1]}:{inner.lineno}"


class SimulatedDevice(TorchFunctionMode):
    """Run `model` as if it sat on a GPU, on the CPU, and record what a GPU would refuse or pay for.

    The model's parameters and buffers, and every tensor made by a factory or `.to()` for `DEVICE` (which their
    `.device` reports), are "device" tensors; results of a call on a device tensor are device tensors, `.cpu()`
    gives a host copy. Recorded by call site: `mixed` (a call with device and host tensors of more than 0 dims:
    a device mismatch on a GPU), `numpy` (`.numpy()` of a device tensor), `syncs` (the host waits for the
    device: `.item()`, `.tolist()`, `bool()`, `.cpu()`, ...), `copies` (host-to-device copies: `.to(device)` of a
    host tensor, a host index into a device tensor). `bmm(..., out_dtype=float32)` (a CUDA-only kernel) is run as
    a float32 bmm: a FAKE of that kernel."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.mixed: Counter[str] = Counter()
        self.numpy: Counter[str] = Counter()
        self.syncs: Counter[str] = Counter()
        self.copies: Counter[str] = Counter()
        for m in modules:
            for t in [*m.parameters(), *m.buffers()]:
                _tag(t, True)
        self._modules = modules

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        for m in self._modules:
            for t in [*m.parameters(), *m.buffers()]:
                _tag(t, False)
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == _DEVICE_GET:
            return DEVICE if on_device(args[0]) else func(*args)
        if func == _GRAD_GET:
            grad = func(*args)
            if grad is not None:
                _tag(grad, on_device(args[0]))
            return grad
        name = getattr(func, "__name__", "")
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        device_in = [t for t in tensors if on_device(t)]
        host_in = [t for t in tensors if not on_device(t) and t.dim() > 0]
        if device_in and name in SYNCS:
            (self.numpy if name == "numpy" else self.syncs)[_site()] += 1
        if device_in and host_in:
            (self.copies if name in COPYING else self.mixed)[_site()] += 1
        if func is torch.bmm and kwargs.get("out_dtype") is not None:  # FAKE of the CUDA mixed-precision kernel
            out_dtype = kwargs.pop("out_dtype")
            out = torch.bmm(*(t.to(out_dtype) for t in args), **kwargs)
        else:
            out = func(*args, **kwargs)
        device = bool(device_in)
        if name in ("to", "cpu", "cuda"):
            target = self._target(name, args, kwargs)
            if target is not None:
                if target and not device_in:
                    self.copies[_site()] += 1
                elif not target and device_in and name == "to":
                    self.syncs[_site()] += 1
                device = target
                if isinstance(out, torch.Tensor) and out is args[0] and target != on_device(args[0]):
                    out = out.clone()  # a real transfer makes a new tensor
        elif "device" in kwargs and kwargs["device"] is not None:
            device = torch.device(kwargs["device"]) == DEVICE
            if device and name in ("tensor", "as_tensor") and not device_in:  # host data copied to the device
                self.copies[_site()] += 1
        elif name in LIKE:
            device = on_device(args[0])
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                _tag(t, device)
        return out

    @staticmethod
    def _target(name: str, args: tuple, kwargs: dict) -> bool | None:
        """For `.to()`/`.cpu()`/`.cuda()`: True to the device, False to the host, None to stay (a dtype change)."""
        if name == "cpu":
            return False
        if name == "cuda":
            return True
        rest = args[1:]
        if rest and isinstance(rest[0], torch.Tensor):
            return on_device(rest[0])
        device = kwargs.get("device")
        if device is None and rest and isinstance(rest[0], (str, torch.device)):
            device = rest[0]
        return None if device is None else torch.device(device) == DEVICE

    def report(self) -> str:
        parts = [f"{what}: " + "; ".join(f"{site} x{n}" for site, n in counter.most_common())
                 for what, counter in (("mixed", self.mixed), ("numpy", self.numpy)) if counter]
        return "\n".join(parts) or "no device mismatch"
