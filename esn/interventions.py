"""Causal tests: deactivate (a ← 0), amplify (a ← (1+α)·a) or knock out whole MLP layers, then score;
and label-free injection, where the gain's target is not given by the true label.

Label-free injection strategies (mode `inject`, the strategy in `target`), each at every α of the gain grid
at the main set size, each beside its layer-matched random counterpart (control `random`):
- `2pass`: score the clip unmodified, take the predicted emotion ê, score again with gain α on ê's set;
  the second answer counts. The second pass is exactly the gain condition of target ê, which every clip
  already has (same α, same set, same audio embedding), so its rows are read from those, not recomputed.
- `mix`: one extra pass with gain on every emotion's set, neuron n scaled by 1 + α·Σ_{e: n ∈ S_e} p(e|clip)
  with p from the unmodified pass. A neuron in several sets sums their probabilities, so no neuron is ever
  scaled beyond Union's 1 + α, and a one-hot p gives exactly the oracle.
- `union`: gain α on the union of all emotions' sets; no prediction needed.
- `oracle`: gain on the true emotion's set (again read from the gain rows) — an upper bound, not label-free.

The cost of a study is (utterances × conditions) decoder passes, so each is made cheap: one answer
step per condition (`AudioLMAdapter.label_logprobs`: one forward, or for multi-token labels a prefix
forward plus one continuation forward over its KV cache; no generation); the audio tower runs once per
clip and its output is reused by every condition (`AudioLMAdapter.embed`, then the answer step over
repeated rows); many conditions share one forward through a per-row scale tensor at the MLP site
(acting on the continuation positions too); clips are length-bucketed. With the audio tower's MLPs as the
site (`audio_mlp`) the tower itself must run once per condition: its rows are batched the same way (the
clip's inputs repeated per condition, per-row scales expanded to the tower's frames), and the answer step
runs on what each row's tower gives.

`mode="generate"` adds the evaluation kits' reading: greedy answers (`esn.generation`) from the same
prefix with the same per-row scales active at every decoding step, parsed into labels (columns
`generated`, `predicted_generated`); the scored columns are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from esn.audio import load_16k_mono
from esn.batching import Fit, Prefetcher, in_pieces, token_budget
from esn.capture import store_order
from esn.generation import generate_answers, parse_answer
from esn.grid import SetKey, shard_blocks, study_grid
from esn.hooks import scaled
from esn.models.base import AudioLMAdapter, Batch, Embedded
from esn.store import ProvenanceError
from esn.tables import CONDITION_KEYS, read_table, sort_interventions, write_table
from esn.workflow import stable_hash

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)

MODES = ("none", "deactivate", "gain", "knockout", "inject")
#: label-free injection strategies (see the module docstring); `oracle` is the upper bound that uses the label
STRATEGIES = ("2pass", "mix", "union", "oracle")
#: How the model's answer is read: closed-set scoring only, or scoring plus greedy generation.
ANSWER_MODES = ("score", "generate")


@dataclass(frozen=True)
class Condition:
    """One way of running the model. `neurons` maps layer -> neuron indices touched (empty for none)."""

    mode: str
    target: str = ""
    control: str = ""
    alpha: float = 0.0
    fraction: float = 0.0
    layer: int = -1
    variant: str = ""      # which identification set chose the neurons ("all", or a subsample "n{N}s{S}")
    draw: int = -1         # which random control draw (0..R-1); -1 for every non-random condition
    neurons: dict[int, np.ndarray] = field(default_factory=dict, compare=False, hash=False)
    #: `mix` only: each label's set (label index -> layer -> neurons), weighted per clip by p(label | clip)
    by_label: dict[int, dict[int, np.ndarray]] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown intervention mode {self.mode!r}; choose one of {MODES}")
        if self.mode == "inject" and self.target not in STRATEGIES:
            raise ValueError(f"unknown injection strategy {self.target!r}; choose one of {STRATEGIES}")

    @property
    def scale(self) -> float:
        return {"none": 1.0, "deactivate": 0.0, "knockout": 0.0, "gain": 1.0 + self.alpha,
                "inject": 1.0 + self.alpha}[self.mode]

    def describe(self) -> dict[str, object]:
        """The condition's keys (`esn.tables.CONDITION_KEYS`), in the order of the fields above."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in CONDITION_KEYS}


def _by_layer(mask: np.ndarray) -> dict[int, np.ndarray]:
    return {int(l): np.flatnonzero(mask[l]) for l in range(mask.shape[0]) if mask[l].any()}


def set_conditions(masks: dict[tuple[str, str, float, int], np.ndarray], alphas: list[float],
                   variant: str = "all", *, deactivate: bool = True) -> list[Condition]:
    """Deactivation and gain conditions for boolean masks [L, N] keyed by (target, control, fraction, draw)."""
    out = []
    for (target, control, fraction, draw), mask in sorted(masks.items()):
        neurons = _by_layer(mask)
        if deactivate:
            out.append(Condition("deactivate", target, control, 0.0, fraction, variant=variant, draw=draw,
                                 neurons=neurons))
        out += [Condition("gain", target, control, float(a), fraction, variant=variant, draw=draw, neurons=neurons)
                for a in alphas]
    return out


def injection_conditions(masks: dict[str, np.ndarray], labels: list[str], alphas: list[float], control: str,
                         fraction: float, draw: int = -1) -> list[Condition]:
    """The conditions label-free injection needs beyond the gain sweep: `mix` and `union` at every α.

    `masks`: each label's set, bool [L, N]. (`2pass` and `oracle` are read from the gain rows.)"""
    union = np.any([masks[e] for e in labels], axis=0)
    by_label = {labels.index(e): _by_layer(masks[e]) for e in labels}
    out = []
    for a in alphas:
        out.append(Condition("inject", "mix", control, float(a), fraction, variant="all", draw=draw,
                             by_label=by_label))
        out.append(Condition("inject", "union", control, float(a), fraction, variant="all", draw=draw,
                             neurons=_by_layer(union)))
    return out


def selection_conditions(selection: "xr.Dataset", labels: list[str], fractions: list[float], main_fraction: float,
                         alphas: list[float], *, sweeps: bool = True, injection: bool = True,
                         unswept_draws: int = 1) -> list[Condition]:
    """Every condition of a study from one selection file (dims variant × emotion × layer × neuron).

    Full identification set: deactivation at every set size and gain over the α grid at the main size,
    each with a layer-matched random control, and label-free injection (`mix`, `union`) over the same α
    grid when `injection` (it needs every label to have a set). The random control of main-size
    deactivation — the headline effect — comes as every draw stored in the selection (`draw` 0..R-1, the
    null its p-value is read against); every sweep uses draw 0 (its cost grows with each condition). The
    selected sets have draw −1. Each other variant (identification-size subsamples, correct-only
    identification): deactivation of the selected sets at the main size (its control is the full set's).
    `sweeps=False` (by default a transfer study) keeps only main-size deactivation of the full set and
    random draws 0..`unswept_draws`−1 (by default draw 0: the cost of a study without sweeps stays small;
    the population asks for 19, the least with which its empirical p-value can reach 0.05).
    """
    from esn.selectors import random_mask, selected_mask

    variants = selection["variant"].values.tolist()
    draws = selection["draw"].values.tolist() if "random_order" in selection else []
    grid = study_grid([e for e in selection["emotion"].values.tolist() if e in labels], labels, variants, fractions,
                      main_fraction, alphas, draws, sweeps=sweeps, injection=injection, unswept_draws=unswept_draws)
    masks: dict[tuple[str, float], tuple] = {}   # (variant, fraction) -> (selected [E, L, N], random [R, E, L, N])
    neurons: dict[SetKey, dict[int, np.ndarray]] = {}

    def chosen(key: SetKey) -> dict[int, np.ndarray]:  # one set's neurons per layer, shared by its conditions
        if key not in neurons:
            if (key.variant, key.fraction) not in masks:
                sel = selection.sel(variant=key.variant)
                masks[key.variant, key.fraction] = (selected_mask(sel, key.fraction),
                                                    random_mask(sel, key.fraction) if draws else None)
            picked, control = masks[key.variant, key.fraction]
            mask = (picked.sel(emotion=key.target) if key.control == "selected"
                    else control.sel(emotion=key.target, draw=key.draw))
            neurons[key] = _by_layer(mask.values)
        return neurons[key]

    out = []
    for cell in grid:
        common = dict(fraction=cell.fraction, variant=cell.variant, draw=cell.draw)
        if cell.mode != "inject":
            out.append(Condition(cell.mode, cell.target, cell.control, cell.alpha, neurons=chosen(cell.sets[0]),
                                 **common))
        elif cell.target == "mix":
            by_target = {k.target: k for k in cell.sets}
            out.append(Condition("inject", "mix", cell.control, cell.alpha, by_label={
                labels.index(e): chosen(by_target[e]) for e in labels}, **common))
        else:  # union
            layers = {l for k in cell.sets for l in chosen(k)}
            union = {l: np.unique(np.concatenate([chosen(k)[l] for k in cell.sets if l in chosen(k)]))
                     for l in sorted(layers)}
            out.append(Condition("inject", "union", cell.control, cell.alpha, neurons=union, **common))
    return out


def knockout_conditions(n_layers: int, n_neurons: int, layers: list[int] | None = None) -> list[Condition]:
    """One condition per decoder layer (of `layers`, default all) with its whole MLP activation zeroed."""
    layers = list(range(n_layers)) if layers is None else layers
    if any(not 0 <= l < n_layers for l in layers):
        raise ValueError(f"knockout layers {layers} outside the model's 0..{n_layers - 1}")
    return [Condition("knockout", layer=l, neurons={l: np.arange(n_neurons)}) for l in layers]


class DeviceIndex:
    """Device copies of the conditions' neuron indices, made once per job rather than once per forward (a
    study's sets are fixed; at 7B each forward would otherwise pay one host-to-device copy per set and layer).
    Keyed by the index array's identity: the conditions that own the arrays outlive the job."""

    def __init__(self, device: torch.device):
        self.device, self._copies = device, {}

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        key = id(idx)
        if key not in self._copies:
            self._copies[key] = (idx, torch.as_tensor(idx, device=self.device))  # keep idx alive: its id stays unique
        return self._copies[key][1]


def _scales(row_conditions: list[Condition], rows: range, B: int, n_neurons: int, device: torch.device,
            base: torch.Tensor | None, index: DeviceIndex) -> dict[int, torch.Tensor]:
    """Per-layer scale tensors [len(rows), N] for a forward over `rows` of the condition-major (condition, clip)
    grid: row r is clip r % B under `row_conditions[r - rows.start]` (consecutive rows share a condition); layers
    no condition touches are absent.

    `base` [B, labels]: the unmodified model's label probabilities per clip, which `mix` rows need."""
    layers = sorted({l for c in row_conditions for l in c.neurons}
                    | {l for c in row_conditions for s in c.by_label.values() for l in s})
    scales = {l: torch.ones(len(row_conditions), n_neurons, device=device) for l in layers}
    start = 0
    while start < len(row_conditions):  # one run of rows per condition
        c = row_conditions[start]
        stop = start + 1
        while stop < len(row_conditions) and row_conditions[stop] is c:
            stop += 1
        for l, idx in c.neurons.items():
            scales[l][start:stop, index(idx)] = c.scale
        if c.by_label:  # mix: 1 + α·Σ_e p(e|clip) over the sets holding the neuron
            clip = torch.arange(rows.start + start, rows.start + stop, device=device) % B
            for label, sets in c.by_label.items():
                weight = c.alpha * base[clip, label][:, None]
                for l, idx in sets.items():
                    scales[l][start:stop, index(idx)] += weight
        start = stop
    return scales


def _per_condition(adapter: AudioLMAdapter, embedded: Embedded, conditions: list[Condition], rows_fit: Fit,
                   run: Callable[[Embedded], Any], base: torch.Tensor | None, index: DeviceIndex,
                   batch: Batch | None = None) -> list:
    """`run` on the clips' prefix repeated once per condition, the conditions' scales active. The rows
    (condition, clip), condition-major, go through decoder forwards of at most `rows_fit.size` rows (whole
    conditions while a condition's clips fit in one forward); a forward that runs out of memory is retried with
    half its rows, and the smaller size is kept. `run` returns one result per row. Results [condition][clip].
    `base`: the unmodified label probabilities per clip (what `mix` weighs its sets by). With a site in the audio
    tower (`adapter.in_audio_tower`) the rows' clips of `batch` go through the tower again under the rows' scales,
    and the answer step runs unscaled on what it gives."""
    B = embedded.inputs_embeds.shape[0]
    sites = adapter.site_modules()

    def forward(rows: range) -> list:
        picked = torch.arange(rows.start, rows.stop, device=adapter.device) % B
        scales = _scales([conditions[r // B] for r in rows], rows, B, adapter.n_neurons, adapter.device, base, index)
        if adapter.in_audio_tower:
            sub = batch.select(picked)
            with scaled(sites, scales, rows_of=adapter.audio_site_rows(sub)):
                tower_embedded = adapter.embed(sub)
            return list(run(tower_embedded))
        with scaled(sites, scales):
            return list(run(embedded.select(picked)))

    R, T = len(conditions) * B, embedded.inputs_embeds.shape[1]
    flat = [r for piece in in_pieces(forward, range(R), rows_fit, unit=B, tokens=[T] * R if rows_fit.tokens else None,
                                     max_items=rows_fit.max_items) for r in piece]
    return [flat[k * B:(k + 1) * B] for k in range(len(conditions))]


@torch.no_grad()
def answer_conditions(adapter: AudioLMAdapter, waveforms: list[np.ndarray], conditions: list[Condition], *,
                      max_rows: int = 64, mode: str = "score", max_new_tokens: int = 8, rows_fit: Fit | None = None,
                      index: DeviceIndex | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Label probabilities [conditions, clips, labels] and, with `mode="generate"`, greedy answers
    [conditions, clips] (str): the audio tower runs once; the unmodified pass first (the `none` rows, and
    the weights of `mix`), then the other conditions batched as rows, at most `max_rows` per forward (or
    `rows_fit.size`, which a job passes so that a size that overflowed once is never tried again)."""
    if mode not in ANSWER_MODES:
        raise ValueError(f"unknown answer mode {mode!r}; choose one of {ANSWER_MODES}")
    return answer_batch(adapter, adapter.build_batch(waveforms), conditions, mode=mode, max_new_tokens=max_new_tokens,
                        rows_fit=Fit(max_rows, "rows per forward") if rows_fit is None else rows_fit, index=index)


@torch.no_grad()
def answer_batch(adapter: AudioLMAdapter, batch: Batch, conditions: list[Condition], *, mode: str = "score",
                 max_new_tokens: int = 8, rows_fit: Fit, index: DeviceIndex | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """`answer_conditions` for a batch already built on the host (e.g. by a `Prefetcher`)."""
    index = DeviceIndex(adapter.device) if index is None else index
    batch = adapter.to_device(batch)
    embedded = adapter.embed(batch)
    base = adapter.label_probabilities(embedded)
    todo = [k for k, c in enumerate(conditions) if c.mode != "none"]
    probs = np.empty((len(conditions), batch.size, len(adapter.labels)), dtype=np.float32)
    probs[[k for k, c in enumerate(conditions) if c.mode == "none"]] = base.cpu().numpy()
    if todo:
        probs[todo] = np.array(_per_condition(adapter, embedded, [conditions[k] for k in todo], rows_fit,
                                              lambda e: adapter.label_probabilities(e).cpu().numpy(), base, index,
                                              batch))
    if mode == "score":
        return probs, None
    texts = _per_condition(adapter, embedded, conditions, rows_fit,
                           lambda e: generate_answers(adapter, e, max_new_tokens=max_new_tokens), base, index, batch)
    return probs, np.array(texts, dtype=object).reshape(len(conditions), batch.size)


def score_conditions(adapter: AudioLMAdapter, waveforms: list[np.ndarray], conditions: list[Condition],
                     *, max_rows: int = 64) -> np.ndarray:
    """Label probabilities [conditions, clips, labels] (see `answer_conditions`)."""
    return answer_conditions(adapter, waveforms, conditions, max_rows=max_rows)[0]


def generate_conditions(adapter: AudioLMAdapter, waveforms: list[np.ndarray], conditions: list[Condition],
                        *, max_rows: int = 64, max_new_tokens: int = 8) -> np.ndarray:
    """Greedy answers [conditions, clips] (str), each condition's scales active on every decoding step."""
    return answer_conditions(adapter, waveforms, conditions, max_rows=max_rows, mode="generate",
                             max_new_tokens=max_new_tokens)[1]


def label_free_rows(table: pd.DataFrame) -> pd.DataFrame:
    """`2pass` and `oracle` rows read from the gain rows of the full identification set: per clip, the gain
    condition whose target is the unmodified model's prediction (2-Pass) or the true emotion (oracle)."""
    gain = table[(table["mode"] == "gain") & (table["variant"] == "all")]
    if gain.empty:
        return table.iloc[:0]
    first = table[table["mode"] == "none"].set_index("utterance_id")["predicted"]
    parts = []
    for strategy, target in (("2pass", gain["utterance_id"].map(first)), ("oracle", gain["emotion"])):
        rows = gain[gain["target"] == target].copy()
        rows["mode"], rows["target"] = "inject", strategy
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def commit_block(partial: Path, block: int, parts: list[pd.DataFrame]) -> None:
    """Commit one block's rows: one parquet per table, then the block's done marker (a block without it is run
    again). A module-level function, so a test can stop a job after exactly k commits."""
    folder = partial / f"block-{block:06d}"
    if folder.exists():  # a block a killed run had begun to write
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, part in enumerate(parts):
        write_table(part, folder / f"{i}.parquet", "interventions")
    (folder / "done").touch()


def _committed(partial: Path, block: int, n_parts: int) -> list[pd.DataFrame] | None:
    folder = partial / f"block-{block:06d}"
    if not (folder / "done").exists():
        return None
    return [read_table(folder / f"{i}.parquet", "interventions") for i in range(n_parts)]


def _fingerprint(adapter: AudioLMAdapter, groups: Mapping[str, list[Condition]], utterances: pd.DataFrame,
                 blocks: list[range], **settings: Any) -> str:
    """What a block's rows depend on: the model, its labels and scoring, every condition with its neurons, the
    clips of each block and the answer settings. A partial written under another fingerprint is refused."""
    h = hashlib.sha256()
    for key, cs in groups.items():
        h.update(str(key).encode())
        for c in cs:
            h.update(repr(sorted(c.describe().items())).encode())
            for label, sets in [(-1, c.neurons), *sorted(c.by_label.items())]:
                for l in sorted(sets):
                    h.update(f"{label}/{l}:".encode() + np.asarray(sets[l], dtype=np.int64).tobytes())
    clips = [utterances.iloc[b.start:b.stop][["utterance_id", "emotion", "duration_s"]].astype(str).values.tolist()
             for b in blocks]
    return stable_hash({"model": adapter.provenance(), "conditions": h.hexdigest(), "clips": clips, **settings})


def discard_partial(partial: str | Path) -> None:
    """Delete a job's committed blocks once its tables are written."""
    shutil.rmtree(partial, ignore_errors=True)


def evaluate(adapter: AudioLMAdapter, manifest: pd.DataFrame,
             conditions: list[Condition] | Mapping[str, list[Condition]], *, batch_size: int = 16,
             max_rows: int = 256, mode: str = "score", max_new_tokens: int = 8, overlap: bool = True,
             batch_tokens: int | str | None = None, block_size: int | None = None, shard: tuple[int, int] = (0, 1),
             partial: str | Path | None = None) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Score every utterance of `manifest` under every condition (plus the unmodified model) — a tidy table,
    with each utterance's speaker where the manifest has one (the metrics resample speakers) and the label
    scoring (`scoring`: full_label | first_token) as a column that the metrics carry.

    Given a mapping (e.g. selector -> its conditions), all of them share each batch's audio embedding and
    its unmodified pass, and one table per key comes back (each with the unmodified rows).
    `mode="generate"` also decodes each (utterance, condition) greedily: columns `generated` (the text)
    and `predicted_generated` (its parsed label, "other" when none is named). `overlap`: prepare the next batch
    on the host while the model runs the current one. `batch_tokens`: size decoder forwards by tokens (rows ×
    prompt length, at most `max_rows` rows) — a number, or "auto" for what fits in the GPU's free memory by the
    per-token model (`esn.batching.token_budget`; on a CPU, forwards stay counted in rows).

    Shards and resumption: the clips, in store order, are cut into blocks of `block_size` (default: one block),
    and `shard` (k, n) runs blocks k, k+n, k+2n, … only (`esn.grid.shard_blocks`); the tables of a study's n
    shards, concatenated and sorted (`esn.tables.merge_interventions`), are the unsharded run's table. With
    `partial` (a folder), each finished block's rows are committed there (`commit_block`) and a run given the
    same folder skips the committed blocks — refusing a folder written for another model, conditions, clips
    or settings; delete it (`discard_partial`) once the tables are written.
    """
    if mode not in ANSWER_MODES:
        raise ValueError(f"unknown answer mode {mode!r}; choose one of {ANSWER_MODES}")
    groups = dict(conditions) if isinstance(conditions, Mapping) else {"": conditions}
    flat = [Condition("none")] + [c for cs in groups.values() for c in cs if c.mode != "none"]
    owner = [None] + [key for key, cs in groups.items() for c in cs if c.mode != "none"]
    utterances = store_order(manifest)
    block_size = block_size or max(len(utterances), 1)
    blocks = shard_blocks(len(utterances), block_size, *shard)
    frames: dict[str, list[pd.DataFrame]] = {key: [] for key in groups}
    clips = Fit(batch_size, "clips per batch")     # shrinks when the audio tower or the unmodified pass overflows
    # rows per decoder forward (or tokens: rows × prompt length, by `batch_tokens`); shrinks when a forward overflows
    budget, how = (batch_tokens, "configured") if isinstance(batch_tokens, int) else (None, "")
    if batch_tokens == "auto" and adapter.in_audio_tower:
        log.warning("batch_tokens: auto sizes decoder forwards by the decoder's neurons; with the audio_mlp site "
                    "forwards stay counted in rows (at most %d)", max_rows)
        batch_tokens = None
    if batch_tokens == "auto":
        mlp = adapter.decoder_layers()[0].mlp
        budget, how = token_budget(adapter.model, adapter.n_layers, mlp.gate_proj.in_features, adapter.n_neurons,
                                   "generate" if mode == "generate" else "score")
        log.info("rows per forward: %s (at most %d)", how, max_rows)
    rows_fit = Fit(max_rows, "rows per forward") if budget is None else Fit(budget, "tokens per forward", tokens=True,
                                                                             max_items=max_rows)
    index = DeviceIndex(adapter.device)
    done: dict[int, list[pd.DataFrame]] = {}
    if partial is not None:
        partial = Path(partial)
        meta = {"fingerprint": _fingerprint(adapter, groups, utterances, blocks, mode=mode,
                                            max_new_tokens=max_new_tokens, keys=list(groups), block_size=block_size,
                                            shard=list(shard)),
                "shard": f"{shard[0]}-of-{shard[1]}", "block_size": block_size,
                "blocks": [[b.start, b.stop] for b in blocks], "clips": int(sum(len(b) for b in blocks))}
        if (partial / "meta.json").exists():
            found = json.loads((partial / "meta.json").read_text())
            if found.get("fingerprint") != meta["fingerprint"]:
                raise ProvenanceError(f"partial intervention rows {partial} were written for another model, other "
                                      "conditions, clips or settings; delete it to start over")
            done = {k: parts for k, b in enumerate(blocks)
                    if (parts := _committed(partial, b.start // block_size, len(groups))) is not None}
        else:
            partial.mkdir(parents=True, exist_ok=True)
            (partial / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("shard %d of %d: %d of the %d clips in %d block(s) of %d%s", shard[0], shard[1],
             sum(len(b) for b in blocks), len(utterances), len(blocks), block_size,
             f"; resumed from {partial}: {len(done)} block(s) already committed, skipped" if done else "")
    bar = tqdm(total=sum(len(b) for k, b in enumerate(blocks) if k not in done), desc="intervene", unit="utt")

    def prepare(piece: range) -> Batch:  # host work: audio loading, features, tokens
        return adapter.build_batch([load_16k_mono(p) for p in utterances["path"].iloc[piece.start:piece.stop]])

    # the next batch is prepared in the background while the model runs (scoring only: generation decodes with
    # the tokenizer, which must not be used from two threads at once)
    prefetch = Prefetcher(prepare) if overlap and mode == "score" else None

    def rows(chunk: pd.DataFrame, probs: np.ndarray, texts: np.ndarray | None) -> None:
        speaker = {"speaker": chunk["speaker"].astype(str).to_numpy()} if "speaker" in chunk else {}
        for k, (c, key, p) in enumerate(zip(flat, owner, probs)):
            frame = pd.DataFrame({"utterance_id": chunk["utterance_id"].to_numpy(),
                                  "emotion": chunk["emotion"].to_numpy(), **speaker, **c.describe()})
            frame["scoring"] = adapter.scorer.mode
            frame["predicted"] = np.asarray(adapter.labels, dtype=object)[p.argmax(-1)]
            for j, label in enumerate(adapter.labels):
                frame[f"p_{label}"] = p[:, j].astype("float32")
            if texts is not None:
                frame["generated"] = texts[k]
                frame["predicted_generated"] = [parse_answer(t, adapter.labels) for t in texts[k]]
            for g in (groups if key is None else [key]):
                frames[g].append(frame)

    def run(piece: range) -> None:
        chunk = utterances.iloc[piece.start:piece.stop]
        batch = prefetch.get(piece) if prefetch is not None else prepare(piece)
        probs, texts = answer_batch(adapter, batch, flat, mode=mode, max_new_tokens=max_new_tokens, rows_fit=rows_fit,
                                    index=index)
        rows(chunk, probs, texts)
        bar.update(len(chunk))

    try:
        for k, block in enumerate(blocks):
            if k in done:
                continue
            in_pieces(run, block, clips, ahead=None if prefetch is None else prefetch.ahead)
            later = [b for j, b in enumerate(blocks) if j > k and j not in done]
            if prefetch is not None and later:  # the next block's first batch, while this one is committed
                prefetch.ahead(later[0][:clips.size])
            if partial is not None:
                commit_block(partial, block.start // block_size, [pd.concat(frames[key], ignore_index=True)
                                                                  for key in groups])
                frames = {key: [] for key in groups}
    finally:
        bar.close()
        if prefetch is not None:
            prefetch.close()
            log.info("host preparation %.1f s, %.0f %% of it hidden behind the model", prefetch.prepare_s,
                     100 * prefetch.hidden_share)
    for fit in (clips, rows_fit):
        if fit.size < fit.asked:
            log.warning("%d %s fit in GPU memory (asked %d)", fit.size, fit.what, fit.asked)
    if partial is not None:  # every block's rows from the partial, in block order
        frames = {key: [] for key in groups}
        for k, block in enumerate(blocks):
            for key, part in zip(groups, done.get(k) or _committed(partial, block.start // block_size, len(groups))):
                frames[key].append(part)
    if not blocks:  # a shard without clips: empty tables with every column
        rows(utterances.iloc[:0], np.zeros((len(flat), 0, len(adapter.labels)), dtype=np.float32),
             None if mode == "score" else np.zeros((len(flat), 0), dtype=object))
    tables = {}
    for key, parts in frames.items():
        table = pd.concat(parts, ignore_index=True)
        if any(c.mode == "inject" for c in groups[key]):
            table = pd.concat([table, label_free_rows(table)], ignore_index=True)
        table = sort_interventions(table)
        table.attrs["batch_size_that_fit"] = clips.size
        table.attrs["tokens_per_forward_that_fit" if rows_fit.tokens else "rows_per_forward_that_fit"] = rows_fit.size
        table.attrs.update(shard=f"{shard[0]}-of-{shard[1]}", blocks=len(blocks), blocks_skipped=len(done))
        tables[key] = table
    if mode == "generate":
        unmodified = next(iter(tables.values()))
        unmodified = unmodified[unmodified["mode"] == "none"]
        agree = float((unmodified["predicted"] == unmodified["predicted_generated"]).mean())
        for table in tables.values():
            table.attrs["scored_generated_agreement"] = agree
        log.info("unmodified model: scored and generated predictions agree on %.3f of %d utterances "
                 "(%.3f of the answers name no label)", agree, len(unmodified),
                 float((unmodified["predicted_generated"] == "other").mean()))
    return tables if isinstance(conditions, Mapping) else tables[""]
