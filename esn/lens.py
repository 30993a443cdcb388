"""Logit lens: at which decoder layer the emotion decision resolves, and where a deactivation's effect appears.

For each decoder layer l, the residual stream after layer l goes through the model's final norm and its
`lm_head`, and is scored over the labels exactly as the answer step scores them (`AudioLMAdapter.scorer`): with
one-token labels from the answer position alone; with multi-token labels the continuation positions are read at
layer l as well (the same two passes as `decode_labels`, every position taken at layer l). At the last layer
this is the model's own computation, so the lens there equals `label_logprobs`.

The per-layer recall of the true emotion says where the decision becomes readable; the resolution layer is the
first layer whose recall's 95 % bootstrap interval (the expanded interval every table uses) lies wholly
above chance (1 / number of labels) — the rule `resolution`. Under each selector's main-size deactivation (rows scaled by the intervention machinery, the same
per-row scales as `esn.interventions`) the lens shows at which layer the effect of removing the neurons appears.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch import nn

from esn.audio import load_16k_mono
from esn.batching import Fit, in_pieces
from esn.capture import store_order
from esn.interventions import Condition, DeviceIndex, _per_condition
from esn.metrics import bootstrap_unit, bootstrap_weights, percentile_interval
from esn.models.base import AudioLMAdapter, Embedded


def lens_parts(adapter: AudioLMAdapter) -> tuple[nn.Module, nn.Module]:
    """The model's final norm and output head, refused clearly where the adapter does not expose them."""
    norm = getattr(adapter.decoder, "norm", None)
    head = adapter.model.get_output_embeddings()
    if not isinstance(norm, nn.Module) or not isinstance(head, nn.Module):
        raise ValueError(f"logit lens: {type(adapter.model).__name__} exposes no final norm (`get_decoder().norm`) "
                         f"and output head (`get_output_embeddings()`) to read the residual stream through")
    return norm, head


@contextmanager
def layer_outputs(layers: list[nn.Module]) -> Iterator[list[list[torch.Tensor]]]:
    """Record each layer's output residual on every call: the answer position of the first call (the prefix
    pass) and every position of later ones (the continuation pass of multi-token scoring)."""
    record: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = []
    for i, layer in enumerate(layers):
        def hook(_m, _args, out, i=i):
            h = out[0] if isinstance(out, tuple) else out
            record[i].append(h[:, -1].clone() if not record[i] else h)  # a copy: the view would keep [R, T, H] alive
        handles.append(layer.register_forward_hook(hook))
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


def lens_logprobs(adapter: AudioLMAdapter, embedded: Embedded) -> torch.Tensor:
    """Label log-probabilities read at every decoder layer [R, n_layers, n_labels] (hooks active around the
    call, e.g. per-row scales, act as in the answer step)."""
    norm, head = lens_parts(adapter)
    scorer = adapter.scorer
    with layer_outputs(adapter.decoder_layers()) as record:
        if scorer.one_pass:
            adapter.decode_last(embedded)
        else:
            adapter.decode_labels(embedded)
    out = []
    for calls in record:
        logits = head(norm(calls[0]))
        if scorer.one_pass:
            scores = scorer.scores(logits)
        else:  # the continuation at this layer, projected as decode_labels projects it (8 positions at a time)
            hidden, targets = norm(calls[1]), scorer.continuation_targets(logits.device)
            picked = []
            for i in range(0, hidden.shape[1], 8):
                logp = torch.log_softmax(head(hidden[:, i:i + 8]).float(), dim=-1)
                picked.append(logp.gather(-1, targets[i:i + 8][None, :, None].expand(len(hidden), -1, 1))[..., 0])
            scores = scorer.sequence_scores(logits, torch.cat(picked, dim=1))
        out.append(torch.log_softmax(scores, dim=-1))
    return torch.stack(out, dim=1)


@torch.no_grad()
def lens_table(adapter: AudioLMAdapter, manifest: pd.DataFrame, conditions: Mapping[str, list[Condition]], *,
               batch_size: int = 16, max_rows: int = 256) -> pd.DataFrame:
    """Per (utterance, condition, layer) the lens's label probabilities and prediction: the unmodified model
    (selector "") and every condition of every selector (`conditions`: selector -> its conditions)."""
    lens_parts(adapter)
    utterances = store_order(manifest)
    flat = [(sel, c) for sel, cs in conditions.items() for c in cs]
    rows_fit, index, frames = Fit(max_rows, "rows per forward"), DeviceIndex(adapter.device), []
    labels = np.asarray(adapter.labels, dtype=object)

    def run(piece: range) -> None:
        chunk = utterances.iloc[piece.start:piece.stop]
        batch = adapter.to_device(adapter.build_batch([load_16k_mono(p) for p in chunk["path"]]))
        embedded = adapter.embed(batch)
        base = lens_logprobs(adapter, embedded).exp()
        results = [base.cpu().numpy()]
        if flat:
            per = _per_condition(adapter, embedded, [c for _, c in flat], rows_fit,
                                 lambda e: lens_logprobs(adapter, e).exp().cpu().numpy(),
                                 base[:, -1], index, batch)
            results += [np.stack(rows) for rows in per]
        for (sel, c), probs in zip([("", Condition("none"))] + flat, results):
            for layer in range(probs.shape[1]):
                p = probs[:, layer]
                frame = pd.DataFrame({"utterance_id": chunk["utterance_id"].to_numpy(),
                                      "emotion": chunk["emotion"].to_numpy()})
                if "speaker" in chunk:
                    frame["speaker"] = chunk["speaker"].astype(str).to_numpy()
                frame["selector"], frame["mode"], frame["target"] = sel, c.mode, c.target
                frame["control"], frame["fraction"], frame["layer"] = c.control, c.fraction, layer
                frame["predicted"] = labels[p.argmax(-1)]
                for j, label in enumerate(adapter.labels):
                    frame[f"p_{label}"] = p[:, j].astype("float32")
                frames.append(frame)

    in_pieces(run, range(len(utterances)), Fit(batch_size, "clips per batch"))
    table = pd.concat(frames, ignore_index=True)
    table.attrs["scoring"] = adapter.scorer.mode
    return table


LENS_KEYS = ["selector", "mode", "target", "control", "fraction"]


def lens_recall(table: pd.DataFrame, labels: list[str], *, n_boot: int = 1000, seed: int = 0,
                unit: str = "speaker") -> pd.DataFrame:
    """Per condition and layer: each class's recall (`class` = the label) and their mean (`class` = "UAR"),
    with 95 % bootstrap intervals (resamples shared by every condition and layer; the expanded percentile interval
    every table uses, `esn.metrics.percentile_interval`) and chance = 1 / labels."""
    first = table.drop_duplicates("utterance_id").set_index("utterance_id")
    uid = first.index
    clusters, used = bootstrap_unit(first["speaker"] if "speaker" in first else None, unit)
    weights = bootstrap_weights(len(uid), n_boot, seed, clusters)
    n_units = len(np.unique(clusters)) if clusters is not None else len(uid)   # as `esn.metrics.summarize`
    y = first["emotion"].to_numpy()
    out = []
    for key, part in table.groupby(LENS_KEYS + ["layer"], sort=True, dropna=False):
        pred = part.set_index("utterance_id")["predicted"].reindex(uid).to_numpy()
        recalls = []
        for label in labels:
            is_c = (y == label).astype(float)
            recalls.append((weights @ (is_c * (pred == label))) / np.maximum(weights @ is_c, 1e-12))
        recalls.append(np.mean(recalls, axis=0))
        for name, r in zip(labels + ["UAR"], recalls):
            est, lo, hi = percentile_interval(r, n_units) if n_boot else (r[0], np.nan, np.nan)
            out.append({**dict(zip(LENS_KEYS + ["layer"], key)), "class": name, "recall": est, "recall_lo": lo,
                        "recall_hi": hi})
    result = pd.DataFrame(out)
    result["chance"], result["bootstrap_unit"] = 1.0 / len(labels), used
    return result


def resolution(recall: pd.DataFrame) -> pd.DataFrame:
    """Per condition and class, the resolution layer: the first layer whose recall interval lies wholly above
    chance (`recall_lo` > chance), -1 where none does."""
    rows = []
    for key, part in recall.groupby(LENS_KEYS + ["class"], sort=True, dropna=False):
        above = part.sort_values("layer")
        above = above[above["recall_lo"] > above["chance"]]
        rows.append({**dict(zip(LENS_KEYS + ["class"], key)),
                     "resolution_layer": int(above["layer"].iloc[0]) if len(above) else -1})
    return pd.DataFrame(rows)
