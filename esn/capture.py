"""Capture: run a model over a corpus and store per-utterance neuron statistics.

Reductions happen inside the hooks, on the device, masked by the position groups (padding never
counts), in float32; each batch is copied to the host once; a background thread writes block k to
the store while the model runs block k+1. Utterances are stored sorted by duration, so the batches
cut from a block need little padding (length bucketing).

`mode="generate"` also stores the unmodified model's greedy answer and its parsed label (decoded
without the capture hooks, so the statistics cover the prompt only) and logs how often the scored and
generated predictions agree (store attribute `scored_generated_agreement`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from esn import store
from esn.audio import load_16k_mono
from esn.batching import Fit, Prefetcher, in_pieces, piece_size, token_budget
from esn.generation import generate_answers, parse_answer
from esn.hooks import on_activations
from esn.models.base import AudioLMAdapter, Batch

log = logging.getLogger(__name__)


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients while attribution differentiates the answer: it needs ∂log p/∂a only, and a
    backward through a 7B model would otherwise also compute and hold a bf16 gradient for every weight
    (~15 GiB). Restores the flags after (the organism trains through the same adapter)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class BatchStatistics:
    """Host copies of one batch's statistics."""

    mean_activation: np.ndarray  # [B, G, L, N]
    frac_positive: np.ndarray    # [B, G, L, N]
    n_positions: np.ndarray      # [B, G]
    label_prob: np.ndarray       # [B, C]
    attribution: np.ndarray | None = None  # [B, L, N]
    generated: np.ndarray | None = None    # [B] greedy answers (capture mode "generate")


#: whether this torch build multiplies bf16/fp16 into float32 on the device (`bmm(..., out_dtype=)`; None: untried)
_MIXED_BMM: bool | None = None


def _bmm_float32(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`m @ x` in float32 from half-precision inputs: one mixed-precision matmul where the build has it, else
    through float32 copies (logged once)."""
    global _MIXED_BMM
    if _MIXED_BMM is not False:
        try:
            out = torch.bmm(m, x, out_dtype=torch.float32)
            _MIXED_BMM = True
            return out
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, NotImplementedError) as e:
            _MIXED_BMM = False
            log.warning("no bf16-in/float32-out matmul on %s (%s): reducing through float32 copies", x.device,
                        str(e).splitlines()[0])
    return torch.bmm(m.float(), x.float())


def masked_sums(a: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip and position group, Σ a and Σ [a > 0] over the group's positions, float32 [B, G, N].

    `a` [B, T, N] activations, `real` [B, T] bool (False on padding), `masks` [B, G, T] 0/1 group masks. A NaN or
    inf at a padded position (some attention kernels return NaN for fully masked rows) never reaches a statistic:
    multiplying it by a 0 mask would give NaN, so padding is filled with 0 instead (`[a > 0]` is false for NaN).
    On a GPU the layer is filled once in its own dtype and both sums run bf16 in, float32 out: no float32 copy.
    The CPU has no such mixed-precision matmul: there a bf16 layer is copied to float32 once (as before), and the
    sums are taken again without the padding only if one came out non-finite (a check that costs no device sync).
    A genuine NaN at a real position still shows (as it should)."""
    a = a.detach()
    padding = ~real[..., None]
    if a.device != torch.device("cpu"):  # any device but the host (meta: the same ops, counted by a benchmark)
        clean = a.masked_fill(padding, 0)
        if a.dtype == torch.float32:
            m = masks.float()
            return torch.bmm(m, clean), torch.bmm(m, (clean > 0).float())
        m = masks.to(a.dtype)
        return _bmm_float32(m, clean), _bmm_float32(m, (clean > 0).to(a.dtype))
    m = masks.float()
    x = a.float()  # a itself when float32
    sums = torch.bmm(m, x)
    if not bool(torch.isfinite(sums).all()):  # rare: sum again without what the padding held
        sums = torch.bmm(m, x.masked_fill(padding, 0))
    return sums, torch.bmm(m, (x > 0).float())


def batch_statistics(adapter: AudioLMAdapter, batch: Batch, groups: tuple[str, ...] | list[str],
                     *, true_label: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> BatchStatistics:
    """One answer step (plus one backward when `true_label` is given, for attribution) with reducing hooks.

    The statistics cover the prompt positions (the first pass at each layer). With multi-token labels
    the answer step also runs a continuation pass over the label tokens (`AudioLMAdapter.decode_labels`):
    its positions count in the attribution only — an intervention scales them too, so a × ∂log p/∂a
    summed over every position the answer step runs is the first-order effect of a gain.
    """
    if adapter.in_audio_tower:
        return _audio_tower_statistics(adapter, adapter.to_device(batch), groups, true_label=true_label, dtype=dtype)
    batch = adapter.to_device(batch)
    masks = batch.position_groups(groups)                       # [G, B, T]
    counts = masks.sum(-1).transpose(0, 1)                       # [B, G]
    by_clip = masks.transpose(0, 1).contiguous()                 # [B, G, T]
    real = batch.attention_mask.bool()
    B, G, L, N = batch.size, len(groups), adapter.n_layers, adapter.n_neurons
    dev = adapter.device
    sums = torch.zeros(B, G, L, N, device=dev)
    positive = torch.zeros(B, G, L, N, device=dev)
    kept: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    answered: dict[int, list[torch.Tensor]] = {l: [] for l in range(L)}
    valid = batch.attention_mask.float()

    def reduce(layer: int, a: torch.Tensor) -> None:
        if layer in seen:
            # a later pass of the answer step at this layer: the continuation of whole-label scoring
            # (label tokens, not prompt positions): no statistics, but part of the attribution
            if true_label is not None:
                a.retain_grad()
                answered[layer].append(a)
            return None
        seen.add(layer)
        sums[:, :, layer], positive[:, :, layer] = masked_sums(a, real, by_clip)
        if true_label is not None:
            a.retain_grad()
            kept[layer] = a
        return None

    with torch.set_grad_enabled(true_label is not None), frozen(adapter.model), \
            on_activations(adapter.site_modules(), reduce):
        with torch.no_grad():  # the audio tower: no site and nothing to differentiate
            embedded = adapter.embed(batch)
        if true_label is not None:
            embedded.inputs_embeds = embedded.inputs_embeds.detach().requires_grad_(True)
        logp = adapter.label_logprobs(embedded)
        attribution = None
        if true_label is not None:
            logp.gather(1, true_label.to(dev)[:, None]).sum().backward()
            attribution = torch.stack([torch.einsum("bt,btn->bn", valid, (kept[l] * kept[l].grad).masked_fill(
                                           ~real[..., None], 0).float())
                                       + sum(((a * a.grad).float().sum(1) for a in answered[l]), torch.zeros((), device=dev))
                                       for l in range(L)], dim=1)
    denom = counts.clamp(min=1)[:, :, None, None]
    out = store.saturate(torch.cat([sums / denom, positive / denom], dim=1), dtype).to(dtype)  # no inf in float16
    host = out.cpu()  # the one host copy of the batch's neuron statistics
    probs = logp.detach().exp().float().cpu()
    return BatchStatistics(host[:, :G].numpy(), host[:, G:].numpy(), counts.round().int().cpu().numpy(),
                           probs.numpy(), None if attribution is None else attribution.detach().float().cpu().numpy())


def _audio_tower_statistics(adapter: AudioLMAdapter, batch: Batch, groups: tuple[str, ...] | list[str], *,
                            true_label: torch.Tensor | None, dtype: torch.dtype) -> BatchStatistics:
    """`batch_statistics` at a site in the audio tower: per clip, the statistics over its valid tower frames
    (group `audio`, the only one there), read while the tower runs in `embed`; attribution differentiates the
    answer through the decoder and the tower (the features are made a leaf that needs a gradient, so every
    layer's activation is in the graph)."""
    if list(groups) != ["audio"]:
        raise ValueError(f"site {adapter.site}: the audio tower's positions are audio frames; capture the position "
                         f"group ['audio'] only, not {list(groups)}")
    dev = adapter.device
    rows = adapter.audio_site_rows(batch)                                                    # [P]
    by_clip = (rows[None, :] == torch.arange(batch.size, device=dev)[:, None]).float()       # [B, P]
    counts = by_clip.sum(-1, keepdim=True)                                                   # [B, 1]
    B, L, N = batch.size, adapter.n_layers, adapter.n_neurons
    sums = torch.zeros(B, 1, L, N, device=dev)
    positive = torch.zeros(B, 1, L, N, device=dev)
    kept: dict[int, torch.Tensor] = {}

    def reduce(layer: int, a: torch.Tensor) -> None:
        flat = a.detach().reshape(-1, N).float()
        sums[:, 0, layer], positive[:, 0, layer] = by_clip @ flat, by_clip @ (flat > 0).float()
        if true_label is not None:
            a.retain_grad()
            kept[layer] = a
        return None

    grad = true_label is not None
    if grad:
        feats = batch.inputs["input_features"]
        batch = Batch({**batch.inputs, "input_features": feats.detach().clone().requires_grad_(True)},
                      batch.attention_mask, batch.audio_mask)
    with torch.set_grad_enabled(grad), frozen(adapter.model):
        with on_activations(adapter.site_modules(), reduce):
            embedded = adapter.embed(batch)
        logp = adapter.label_logprobs(embedded)
        attribution = None
        if grad:
            logp.gather(1, true_label.to(dev)[:, None]).sum().backward()
            attribution = torch.stack([by_clip @ (kept[l] * kept[l].grad).detach().reshape(-1, N).float()
                                       for l in range(L)], dim=1)
    denom = counts.clamp(min=1)[:, :, None, None]
    return BatchStatistics((sums / denom).to(dtype).cpu().numpy(), (positive / denom).to(dtype).cpu().numpy(),
                           counts.round().int().cpu().numpy(), logp.detach().exp().float().cpu().numpy(),
                           None if attribution is None else attribution.float().cpu().numpy())


def _concat(parts: list[BatchStatistics]) -> BatchStatistics:
    return BatchStatistics(*[None if getattr(parts[0], f) is None else np.concatenate([getattr(p, f) for p in parts])
                             for f in ("mean_activation", "frac_positive", "n_positions", "label_prob", "attribution",
                                       "generated")])


def clip_tokens(adapter: AudioLMAdapter, durations: np.ndarray) -> np.ndarray:
    """Each clip's sequence length (prompt + audio tokens), interpolated between those of the shortest and the
    longest clip (built on silence of that length): what batches sized by tokens need before any batch is built."""
    lo, hi = float(durations.min()), float(durations.max())
    length = [int(adapter.build_batch([np.zeros(max(1, round(d * 16000)), dtype=np.float32)]).attention_mask.shape[1])
              for d in (lo, hi)]
    if hi == lo:
        return np.full(len(durations), length[0])
    return np.ceil(length[0] + (durations - lo) * (length[1] - length[0]) / (hi - lo)).astype(int)


def store_order(manifest: pd.DataFrame) -> pd.DataFrame:
    """Utterances sorted by duration (then id): the store's order, so blocks are length buckets."""
    return manifest.sort_values(["duration_s", "utterance_id"], kind="stable").reset_index(drop=True)


def capture(adapter: AudioLMAdapter, manifest: pd.DataFrame, out: str | Path, *, groups: list[str],
            batch_size: int = 16, dtype: str = "float32", attribution: bool = False, block_size: int = 256,
            attrs: dict[str, str] | None = None, mode: str = "score", max_new_tokens: int = 8,
            overlap: bool = True, batch_tokens: int | str | None = None) -> dict[str, Any]:
    """Capture `manifest` into the store `out` (resuming a killed run from `<out>.partial`). `overlap`: prepare the
    next batch on the host while the model runs the current one. `batch_tokens`: size batches by tokens (clips ×
    padded length, at most `batch_size` clips) instead of clips — a number, or "auto" for what fits in the device's
    free memory by the per-token model (`esn.batching.token_budget`; on a CPU, batches stay counted in clips)."""
    if mode not in ("score", "generate"):
        raise ValueError(f"unknown answer mode {mode!r}; choose score or generate")
    if adapter.in_audio_tower and list(groups) != ["audio"]:
        raise ValueError(f"site {adapter.site}: the audio tower's positions are audio frames; capture the position "
                         f"group ['audio'] only, not {list(groups)} (esn.models.base.site_groups)")
    if adapter.in_audio_tower and batch_tokens == "auto":
        log.warning("batch_tokens: auto sizes batches by the decoder's neurons; with the audio_mlp site batches "
                    "stay counted in clips")
        batch_tokens = None
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    utterances = store_order(manifest)
    layout = store.StoreLayout(len(utterances), tuple(groups), adapter.n_layers, adapter.n_neurons,
                               tuple(adapter.labels), dtype, block_size, attribution=attribution,
                               generated=mode == "generate")
    attrs = {**adapter.provenance(), **(attrs or {}), "positions": ",".join(groups), "store_dtype": dtype,
             "attribution": str(attribution), "answer_mode": mode}
    if partial.exists():
        g = store.open_group(partial)
        store.check_provenance(dict(g.attrs), attrs, f"partial store {partial}")
        if store.layout_of(g) != layout:
            raise store.ProvenanceError(f"partial store {partial} has another layout; delete it to start over")
        resumed = True
    else:
        g = store.create(partial, utterances, layout, attrs)
        resumed = False
    todo = store.pending_blocks(g)
    log.info("capture %d utterances into %s: %d/%d blocks to do%s", len(utterances), out, len(todo),
             layout.n_blocks, " (resumed)" if resumed else "")
    label_index = {l: i for i, l in enumerate(adapter.labels)}
    torch_dtype = getattr(torch, dtype)
    t0, n_done = time.time(), 0
    way = "attribution" if attribution else "generate" if mode == "generate" else "capture"
    budget, how = (batch_tokens, "configured") if isinstance(batch_tokens, int) else (None, "")
    if batch_tokens == "auto":
        mlp = adapter.decoder_layers()[0].mlp
        budget, how = token_budget(adapter.model, adapter.n_layers, mlp.gate_proj.in_features, adapter.n_neurons, way)
        log.info("batch size: %s", how)
    tokens = None if budget is None else clip_tokens(adapter, utterances["duration_s"].to_numpy(dtype=float))
    # shrinks on out-of-memory, for the rest of the job
    clips = Fit(batch_size, "clips per batch") if budget is None else Fit(budget, "tokens per batch")
    if budget is not None:
        g.attrs.update({"batch_tokens": str(budget), "batch_tokens_source": how})
    writer = ThreadPoolExecutor(max_workers=1)
    pending: Future | None = None
    saturated = [int(g.attrs.get("saturated", 0))]  # committed blocks' count, kept across a resume

    def commit(k: int, values: dict[str, np.ndarray]) -> None:  # in the writer thread
        store.write_block(g, k, values)
        n_saturated = store.n_saturated(values["mean_activation"])  # fractions lie in [0, 1]
        if n_saturated:
            saturated[0] += n_saturated
            g.attrs["saturated"] = str(saturated[0])
            log.warning("block %d: %d statistics beyond the %s range were clipped (store attribute 'saturated')",
                        k, n_saturated, dtype)

    bar = tqdm(total=sum(layout.block(k).stop - layout.block(k).start for k in todo), desc="capture", unit="utt")

    def prepare(piece: range) -> Batch:  # host work: audio loading, features, tokens
        return adapter.build_batch([load_16k_mono(p) for p in utterances["path"].iloc[piece.start:piece.stop]])

    # the next batch is prepared in the background while the model runs (not while generating: the tokenizer
    # would be used from two threads at once)
    prefetch = Prefetcher(prepare) if overlap and mode == "score" else None

    def run(piece: range) -> BatchStatistics:
        rows = utterances.iloc[piece.start:piece.stop]
        truth = torch.tensor([label_index[e] for e in rows["emotion"]]) if attribution else None
        batch = prefetch.get(piece) if prefetch is not None else prepare(piece)
        stats = batch_statistics(adapter, batch, groups, true_label=truth, dtype=torch_dtype)
        if mode == "generate":
            with torch.no_grad():
                embedded = adapter.embed(adapter.to_device(batch))
            stats.generated = np.array(generate_answers(adapter, embedded, max_new_tokens=max_new_tokens),
                                       dtype=object)
        bar.update(len(rows))
        return stats

    try:
        for j, k in enumerate(todo):
            span = layout.block(k)
            rows = utterances.iloc[span]
            parts = in_pieces(run, range(span.start, span.stop), clips, max_items=batch_size,
                              tokens=None if tokens is None else tokens[span], ahead=prefetch and prefetch.ahead)
            if prefetch is not None and j + 1 < len(todo):  # the next block's first batch, while this one is stored
                after = layout.block(todo[j + 1])
                n = piece_size(clips.size, after.stop - after.start, 0, max_items=batch_size,
                               tokens=None if tokens is None else tokens[after])
                prefetch.ahead(range(after.start, after.start + n))
            block = _concat(parts)
            values = {name: getattr(block, name) for name in ("mean_activation", "frac_positive", "n_positions",
                                                              "label_prob", "attribution")}
            if not attribution:
                del values["attribution"]
            values["predicted"] = np.asarray(adapter.labels, dtype=object)[block.label_prob.argmax(-1)]
            if mode == "generate":
                values["generated"] = block.generated
                values["predicted_generated"] = np.array([parse_answer(t, adapter.labels) for t in block.generated],
                                                         dtype=object)
            values["correct"] = (values["predicted"] == rows["emotion"].to_numpy(dtype=object)).astype("int8")
            if pending is not None:
                pending.result()  # at most one block in flight; errors surface here
            pending = writer.submit(commit, k, values)
            n_done += len(rows)
        if pending is not None:
            pending.result()
    finally:
        bar.close()
        writer.shutdown(wait=True)
        if prefetch is not None:
            prefetch.close()
    fitted = {"batch_size_that_fit" if budget is None else "batch_tokens_that_fit": clips.size}
    g.attrs.update({**{k: str(v) for k, v in fitted.items()}, "saturated": str(saturated[0])})
    summary: dict[str, Any] = {}
    if prefetch is not None:
        summary["host_preparation_s"] = round(prefetch.prepare_s, 2)
        summary["host_preparation_hidden"] = round(prefetch.hidden_share, 3)
        log.info("host preparation %.1f s, %.0f %% of it hidden behind the model", prefetch.prepare_s,
                 100 * prefetch.hidden_share)
    if mode == "generate":
        agree = g["predicted_generated"][:] == g["predicted"][:]  # the whole store, also blocks of a resumed run
        summary["scored_generated_agreement"] = round(float(agree.mean()), 4)
        g.attrs["scored_generated_agreement"] = str(summary["scored_generated_agreement"])
        log.info("unmodified model: scored and generated predictions agree on %.3f of %d utterances",
                 summary["scored_generated_agreement"], len(utterances))
    store.finalize(partial, out)
    elapsed = time.time() - t0
    return {"utterances": len(utterances), "captured": n_done, "blocks": layout.n_blocks, "resumed": resumed,
            **fitted, "saturated": saturated[0], "seconds": round(elapsed, 2),
            "utterances_per_s": round(n_done / max(elapsed, 1e-9), 2), **summary}
