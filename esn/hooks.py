"""Forward hooks at the MLP activation site: read neurons (capture) or rescale them (interventions).

Both work on a per-row basis so one forward pass can carry many conditions: an intervention is a
multiplicative scale per (row, layer, neuron) — 0 deactivates, 1 + α amplifies, 1 leaves alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

Reader = Callable[[int, torch.Tensor], None]


@contextmanager
def on_activations(sites: list[tuple[nn.Module, str]], fn: Callable[[int, torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Call `fn(layer, activation)` at every site; a returned tensor replaces the activation."""
    handles = []
    for layer, (module, kind) in enumerate(sites):
        if kind == "output":
            def hook(_m, _args, out, layer=layer):
                return fn(layer, out)
            handles.append(module.register_forward_hook(hook))
        else:
            def pre_hook(_m, args, layer=layer):
                new = fn(layer, args[0])
                return None if new is None else (new, *args[1:])
            handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def scaled(sites: list[tuple[nn.Module, str]], scales: dict[int, torch.Tensor],
           rows_of: torch.Tensor | None = None) -> Iterator[None]:
    """Multiply layer l's activations by `scales[l]` ([rows, neurons], broadcast over positions).

    `rows_of` [P]: for activations that are not [rows, positions, neurons] (an audio tower that packs every
    clip's frames into one sequence, or pads them), the row of each of the P positions of the activation
    flattened to [P, neurons] (-1 on padding, which is scaled as row 0: it reaches no output).
    Layers without an entry are left untouched (no multiplication at all, so a gain of exactly 1.0
    elsewhere never perturbs the numbers).
    """
    def apply(layer: int, a: torch.Tensor) -> torch.Tensor | None:
        s = scales.get(layer)
        if s is None:
            return None
        if rows_of is not None:
            if rows_of.numel() * a.shape[-1] != a.numel():
                raise ValueError(f"layer {layer}: {rows_of.numel()} positions mapped to rows, but the activation "
                                 f"{tuple(a.shape)} has {a.numel() // a.shape[-1]}")
            s = s.to(a.dtype)[rows_of.clamp(min=0)].reshape(a.shape)
        else:
            s = s.to(a.dtype).unsqueeze(1)
        # in place when no gradient is recorded: the activation is a fresh tensor of this forward
        return a.mul_(s) if not torch.is_grad_enabled() else a * s

    with on_activations(sites, apply):
        yield


@contextmanager
def knocked_out(sites: list[tuple[nn.Module, str]], layers: list[int]) -> Iterator[None]:
    """Zero the whole MLP activation of `layers` for every row (layer knockout)."""
    def apply(layer: int, a: torch.Tensor) -> torch.Tensor | None:
        return torch.zeros_like(a) if layer in layers else None

    with on_activations(sites, apply):
        yield
