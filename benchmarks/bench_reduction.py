"""The capture reduction at one decoder layer of the 7B shape: before (float32 copy of the layer, padding masked by
multiplication) and after (`esn.capture.masked_sums`), against the layer's own MLP forward.

    python benchmarks/bench_reduction.py                 # CPU, B=16 x T=150 x N=18944, hidden 3584 (~1-2 min)
    python benchmarks/bench_reduction.py --device cuda   # the same on a GPU (also a check in gpu_check.py)

Reports per layer: milliseconds (median), bytes written by the reduction's operations (its memory traffic beyond
reading the activations; counted from every op's outputs) on this device and for the GPU's operations (counted on
the meta device: the CPU has no bf16-in/float32-out matmul, so there it takes another path), the overhead over the
MLP forward of the same tokens
(gate, up, act, down: what a plain forward spends at that layer), and how far the float32 sums are from a float64
reference. Writes benchmarks/out/reduction_<device>.json.
"""

from __future__ import annotations

import argparse

import torch
from common import device_info, timed, write
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from esn.capture import masked_sums


def before(a: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reduction as it was: a float32 copy of the layer, a second for a > 0, padding multiplied by 0."""
    af = a.detach().float()
    m = masks.transpose(0, 1)  # [G, B, T]
    return torch.einsum("gbt,btn->bgn", m, af), torch.einsum("gbt,btn->bgn", m, (af > 0).float())


class BytesWritten(TorchDispatchMode):
    """Sum of the output bytes of every op that allocates its output (not views, not in-place ops)."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and not func._schema.is_mutable:  # in-place ops write only what they change
            self.bytes += sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def layer_inputs(B: int, T: int, N: int, device: str, dtype: torch.dtype, groups: int = 3, seed: int = 0):
    """Activations [B, T, N] (gelu-like: about half positive), left padding of 0-40 % per clip, G group masks."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.silu(torch.randn(B, T, N, generator=g)).to(device, dtype)
    pad = (torch.rand(B, generator=g) * 0.4 * T).long()
    real = (torch.arange(T)[None] >= pad[:, None]).to(device)
    audio = real & (torch.arange(T)[None] < T - 30).to(device)
    last = torch.zeros_like(real)
    last[:, -1] = True
    masks = torch.stack([audio, real & ~audio, last][:groups], dim=1).float()  # [B, G, T]
    return a, real, masks


def reduction_costs(B: int = 16, T: int = 150, N: int = 18944, hidden: int = 3584, device: str = "cpu",
                    dtype: torch.dtype = torch.bfloat16, repeats: int = 3, mlp: bool = True) -> dict:
    a, real, masks = layer_inputs(B, T, N, device, dtype)
    exact = a.double().masked_fill(~real[..., None], 0)
    ref = torch.einsum("bgt,btn->bgn", masks.double(), exact)
    out: dict = {"B": B, "T": T, "N": N, "dtype": str(dtype).replace("torch.", ""), "device": device}
    for name, fn in (("before", before), ("after", masked_sums)):
        counter = BytesWritten()
        with counter:
            sums, _ = fn(a, real, masks)
        out[name] = {"ms": round(timed(lambda: fn(a, real, masks), repeats) * 1e3, 2),
                     "MB_written": round(counter.bytes / 1e6, 1),
                     "max_rel_diff_vs_float64": float(((sums.double() - ref).abs() / ref.abs().clamp(min=1)).max())}
    meta = layer_inputs(B, T, N, "cpu", dtype)  # the GPU's operations on the meta device: their bytes, no compute
    meta = (meta[0].to("meta"), meta[1].to("meta"), meta[2].to("meta"))
    for name, fn in (("before", before), ("after", masked_sums)):
        counter = BytesWritten()
        with counter:
            fn(*meta)
        out[name]["MB_written_gpu_path"] = round(counter.bytes / 1e6, 1)
    if mlp:
        x = torch.randn(B * T, hidden, device=device, dtype=dtype)
        gate_up = torch.nn.Linear(hidden, 2 * N, bias=False, device=device, dtype=dtype)
        down = torch.nn.Linear(N, hidden, bias=False, device=device, dtype=dtype)

        @torch.no_grad()
        def forward() -> None:
            g, u = gate_up(x).chunk(2, dim=-1)
            down(torch.nn.functional.silu(g) * u)

        out["mlp_forward_ms"] = round(timed(forward, max(1, repeats - 1)) * 1e3, 1)
        for name in ("before", "after"):
            out[name]["over_mlp_forward"] = round(out[name]["ms"] / out["mlp_forward_ms"], 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--T", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    result = {**device_info(), "layer": "Qwen2.5-Omni-7B thinker MLP (hidden 3584, 18944 neurons)"}
    for dtype in (torch.bfloat16, torch.float32):
        result[str(dtype).replace("torch.", "")] = reduction_costs(args.B, args.T, device=args.device, dtype=dtype,
                                                                  repeats=args.repeats)
    write(f"reduction_{args.device.split(':')[0]}", result)


if __name__ == "__main__":
    main()
