from pathlib import Path

import pandas as pd
import torch

from esn.models import load_adapter
from esn.prepare import evaluation_clips, load_manifest
from esn.selectors import open_selection, selected_mask
from esn.steering import mean_difference, residual_statistics, steer_table, steering_conditions
from esn.tables import write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, cfg, steering = snakemake.params.model, snakemake.params.intervention, snakemake.params.steering
wc = snakemake.wildcards
ident = load_manifest(Path(snakemake.input.id_manifest).parent)
ident = ident[ident["split"] == "identification"]
evaluation = load_manifest(Path(snakemake.input.manifest).parent)
evaluation = evaluation_clips(evaluation, cfg["max_per_emotion"], snakemake.config["seed"])
labels = snakemake.config["corpora"][wc.eval_corpus]["classes"]
adapter = load_adapter(spec, labels, snakemake.params.device)
layer = adapter.n_layers // 2 if steering["layer"] is None else steering["layer"]
if not 0 <= layer < adapter.n_layers:
    raise ValueError(f"steering.layer {layer} outside the model's decoder layers 0..{adapter.n_layers - 1}")
# the reference selector's sets at the main size fix each vector's norm (the matching rule, esn/steering.py); every
# selector's change norm is recorded beside it (the sizes its gain makes, to read the comparison by)
reference = snakemake.params.selector
if reference not in snakemake.params.selectors:
    raise ValueError(f"steering.selector {reference!r} is not one of the study's selectors "
                     f"{snakemake.params.selectors}")
sets = {}
for sel, path in zip(snakemake.params.selectors, snakemake.input.selections):
    mask = selected_mask(open_selection(path).sel(variant="all"), cfg["fraction"])
    sets.update({(sel, e): mask.sel(emotion=e).values for e in labels})
utterances, means, norms = residual_statistics(adapter, ident, [layer], sets, batch_size=spec["batch_size"])
directions = mean_difference(means, utterances["emotion"].to_numpy(), labels)
steers = steering_conditions(directions, {e: norms[(reference, e)] for e in labels}, labels, [layer], cfg["alphas"],
                             cfg["fraction"], seed=snakemake.config["seed"])
log.info("steering at layer %d, norm of %s's gain change: %d conditions x %d utterances", layer, reference,
         len(steers), len(evaluation))
vectors = pd.DataFrame([{"selector": sel, "emotion": e, "layer": layer, "fraction": cfg["fraction"],
                         "reference": sel == reference, "gain_change_norm_per_alpha": float(norms[(sel, e)][0]),
                         "mean_difference_norm": float((directions[i, 0] ** 2).sum() ** 0.5),
                         "identification_clips": int((utterances["emotion"] == e).sum())}
                        for sel in snakemake.params.selectors for i, e in enumerate(labels)])
write_table(vectors, snakemake.output.vectors, "steering_vectors")
log.info("vectors:\n%s", vectors.to_string(index=False))
table = steer_table(adapter, evaluation, steers, batch_size=spec["batch_size"], max_rows=cfg["max_rows"])
write_table(table, snakemake.output.table, "interventions")
