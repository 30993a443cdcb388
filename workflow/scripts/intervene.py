from pathlib import Path

import torch

from esn.interventions import discard_partial, evaluate, knockout_conditions, selection_conditions
from esn.models import load_adapter
from esn.prepare import evaluation_clips, load_manifest
from esn.selectors import open_selection
from esn.tables import write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, cfg = snakemake.params.model, snakemake.params.intervention
manifest = load_manifest(Path(snakemake.input.manifest).parent)
manifest = evaluation_clips(manifest, cfg["max_per_emotion"], snakemake.config["seed"])
labels = snakemake.config["corpora"][snakemake.wildcards.eval_corpus]["classes"]
adapter = load_adapter(spec, labels, snakemake.params.device)
if snakemake.rule == "knockout":
    conditions = {snakemake.output[0]: knockout_conditions(adapter.n_layers, adapter.n_neurons,
                                                           cfg["knockout_layers"])}
else:  # one table per selector (outputs in the order of params.selectors)
    conditions = {out: selection_conditions(open_selection(path), labels, cfg["fractions"], cfg["fraction"],
                                            cfg["alphas"], sweeps=snakemake.params.sweeps, injection=cfg["injection"],
                                            unswept_draws=cfg["unswept_draws"])
                  for out, path in zip(snakemake.output, snakemake.input.selections)}
log.info("%d conditions x %d utterances (%s)", 1 + sum(len(c) for c in conditions.values()), len(manifest),
         ", ".join(f"{len(c)} for {out}" for out, c in conditions.items()))
shard = (int(snakemake.wildcards.shard), int(snakemake.wildcards.n))  # blocks k, k+n, ... (esn.grid.shard_blocks)
tables = evaluate(adapter, manifest, conditions, batch_size=spec["batch_size"], max_rows=cfg["max_rows"],
                  mode=cfg["mode"], max_new_tokens=cfg["max_new_tokens"], batch_tokens=spec.get("batch_tokens"),
                  block_size=cfg["block_size"], shard=shard, partial=snakemake.params.partial)
for out, table in tables.items():
    write_table(table, out, "interventions")
discard_partial(snakemake.params.partial)
