"""A study's grid without its neurons: which conditions it runs, and how its evaluation clips are cut into
committed blocks and shards. Torch-free, so the cost plan (`esn.cost`) counts exactly what the jobs build:
`esn.interventions.selection_conditions` fills this grid's cells with the selection's neuron sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class SetKey(NamedTuple):
    """One neuron set of a selection file: the sets of `variant` at `fraction`, for `target`, selected or one
    random draw (`draw` -1 for the selected set)."""

    variant: str
    fraction: float
    target: str
    control: str
    draw: int


class Cell(NamedTuple):
    """One condition of a study as keys (`esn.tables.CONDITION_KEYS` but `layer`); `sets` the neuron sets it
    scales: one for deactivation and gain, every target's for label-free injection (`mix`, `union`)."""

    mode: str
    target: str
    control: str
    alpha: float
    fraction: float
    variant: str
    draw: int
    sets: tuple[SetKey, ...]


def study_grid(targets: Sequence[str], labels: Sequence[str], variants: Sequence[str], fractions: Sequence[float],
               main_fraction: float, alphas: Sequence[float], draws: Sequence[int], *, sweeps: bool = True,
               injection: bool = True, unswept_draws: int = 1) -> list[Cell]:
    """Every condition of a study (but the unmodified pass), in the order the job runs them (see
    `esn.interventions.selection_conditions` for what each is for). `targets`: the selection's emotions that
    are labels of the evaluation corpus; `variants`: the selection's identification variants (the first,
    "all", is the full set, the only one with random draws); `draws`: the stored random draws (0..R-1), of
    which a study without sweeps runs the first `unswept_draws`."""
    out: list[Cell] = []
    targets = list(targets)
    for variant in (variants if sweeps else ["all"]):
        full = variant == "all"
        for fraction in (fractions if full and sweeps else [main_fraction]):
            at_main = abs(fraction - main_fraction) <= 1e-8 + 1e-5 * abs(main_fraction)  # as numpy.isclose
            keys = [SetKey(variant, fraction, t, "selected", -1) for t in targets]
            if full:  # the random control belongs to the full identification set
                keys += [SetKey(variant, fraction, t, "random", d) for t in targets
                         for d in (list(draws) if sweeps else list(draws)[:unswept_draws])]
            one_draw = sorted(k for k in keys if k.draw <= 0)
            for key in (sorted(keys) if at_main else one_draw):  # (target, control, draw) order
                out.append(Cell("deactivate", key.target, key.control, 0.0, fraction, variant, key.draw, (key,)))
            if at_main and full and sweeps:
                for key in one_draw:
                    out += [Cell("gain", key.target, key.control, float(a), fraction, variant, key.draw, (key,))
                            for a in alphas]
                if injection and set(targets) == set(labels):
                    for kind, draw in (("selected", -1), ("random", 0))[:2 if draws else 1]:
                        sets = tuple(SetKey(variant, fraction, t, kind, draw) for t in targets)
                        for a in alphas:
                            out.append(Cell("inject", "mix", kind, float(a), fraction, variant, draw, sets))
                            out.append(Cell("inject", "union", kind, float(a), fraction, variant, draw, sets))
    return out


def shard_blocks(n_clips: int, block_size: int, shard: int = 0, n_shards: int = 1) -> list[range]:
    """The blocks of shard `shard` (0-based) of `n_shards`: the evaluation clips, in store order (duration, then
    id; `esn.capture.store_order`), cut into consecutive blocks of `block_size`; shard k takes blocks k, k+n,
    k+2n, … (balanced clip lengths, like capture's every-n-th clip). Block boundaries do not depend on the
    shard count, so every clip is batched alike in a sharded and an unsharded run."""
    if block_size < 1 or not 0 <= shard < n_shards:
        raise ValueError(f"need block_size >= 1 and 0 <= shard < n_shards, not {block_size}, {shard}, {n_shards}")
    starts = range(0, n_clips, block_size)
    return [range(s, min(s + block_size, n_clips)) for s in starts[shard::n_shards]]
