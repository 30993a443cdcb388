from pathlib import Path

import torch

from esn.interventions import evaluate, knockout_conditions, selection_conditions
from esn.models import load_adapter
from esn.prepare import load_manifest
from esn.selectors import open_selection
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, cfg = snakemake.params.model, snakemake.params.intervention
manifest = load_manifest(Path(snakemake.input.manifest).parent)
manifest = manifest[manifest["split"] == "evaluation"]
labels = snakemake.config["corpora"][snakemake.wildcards.eval_corpus]["classes"]
adapter = load_adapter(spec, labels, snakemake.params.device)
if snakemake.rule == "knockout":
    conditions = knockout_conditions(adapter.n_layers, adapter.n_neurons, cfg["knockout_layers"])
else:
    conditions = selection_conditions(open_selection(snakemake.input.selection), labels, cfg["fractions"],
                                      cfg["fraction"], cfg["alphas"])
log.info("%d conditions x %d utterances", len(conditions) + 1, len(manifest))
table = evaluate(adapter, manifest, conditions, batch_size=spec["batch_size"], max_rows=cfg["max_rows"],
                 mode=cfg["mode"], max_new_tokens=cfg["max_new_tokens"])
table.to_parquet(snakemake.output[0], index=False)
