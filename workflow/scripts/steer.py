from pathlib import Path

import pandas as pd
import torch

from esn.models import load_adapter
from esn.prepare import evaluation_clips, load_manifest
from esn.selectors import open_selection, selected_mask
from esn.steering import mean_difference, residual_statistics, steer_table, steering_conditions, steering_layers
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
layers, stream = steering_layers(steering["layer"], steering["layers"], adapter.n_layers), steering["stream"]
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
utterances, means, norms = residual_statistics(adapter, ident, layers, sets, batch_size=spec["batch_size"],
                                               stream=stream)
directions = mean_difference(means, utterances["emotion"].to_numpy(), labels)
steers = steering_conditions(directions, {e: norms[(reference, e)] for e in labels}, labels, layers, cfg["alphas"],
                             cfg["fraction"], seed=snakemake.config["seed"])
log.info("steering the %s at layers %s, norm of %s's gain change: %d conditions x %d utterances", stream, layers,
         reference, len(steers), len(evaluation))
vectors = pd.DataFrame([{"selector": sel, "emotion": e, "layer": layer, "fraction": cfg["fraction"], "stream": stream,
                         "reference": sel == reference, "gain_change_norm_per_alpha": float(norms[(sel, e)][j]),
                         "mean_difference_norm": float((directions[i, j] ** 2).sum() ** 0.5),
                         "identification_clips": int((utterances["emotion"] == e).sum())}
                        for sel in snakemake.params.selectors for i, e in enumerate(labels)
                        for j, layer in enumerate(layers)])
write_table(vectors, snakemake.output.vectors, "steering_vectors")
log.info("vectors:\n%s", vectors.to_string(index=False))
table = steer_table(adapter, evaluation, steers, batch_size=spec["batch_size"], max_rows=cfg["max_rows"],
                    stream=stream)
write_table(table, snakemake.output.table, "interventions")
