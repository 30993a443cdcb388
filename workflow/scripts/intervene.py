from pathlib import Path

import torch

from esn.interventions import evaluate, knockout_conditions, set_conditions
from esn.models import load_adapter
from esn.prepare import load_manifest
from esn.selectors import open_selection, random_mask, selected_mask
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, cfg = snakemake.params.model, snakemake.params.intervention
eval_corpus = snakemake.wildcards.eval_corpus
manifest = load_manifest(Path(snakemake.input.manifest).parent)
manifest = manifest[manifest["split"] == "evaluation"]
labels = snakemake.config["corpora"][eval_corpus]["classes"]
adapter = load_adapter(spec, labels, snakemake.params.device)

if snakemake.rule == "knockout":
    conditions = knockout_conditions(adapter.n_layers, adapter.n_neurons)
else:
    selection = open_selection(snakemake.input.selection)
    # a sweep variant (identification-size subsample) is only deactivated at the main set size
    fractions = [cfg["fraction"]] if snakemake.params.sweep else cfg["fractions"]
    masks = {}
    for fraction in fractions:
        chosen, control = selected_mask(selection, fraction), random_mask(selection, fraction)
        for target in [e for e in selection["emotion"].values.tolist() if e in labels]:
            masks[(target, "selected", fraction)] = chosen.sel(emotion=target).values
            masks[(target, "random", fraction)] = control.sel(emotion=target).values
    alphas = [] if snakemake.params.sweep else cfg["alphas"]
    # gain is swept at the main set size only; deactivation at every size
    conditions = [c for c in set_conditions(masks, alphas) if c.mode == "deactivate" or c.fraction == cfg["fraction"]]
log.info("%d conditions x %d utterances", len(conditions) + 1, len(manifest))
table = evaluate(adapter, manifest, conditions, batch_size=spec["batch_size"], max_rows=cfg["max_rows"])
table.to_parquet(snakemake.output[0], index=False)
