from pathlib import Path

import torch

from esn.interventions import selection_conditions
from esn.lens import lens_table
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
# each selector's main-size deactivation of the selected sets (as the intervention job reads them)
conditions = {sel: [c for c in selection_conditions(open_selection(path), labels, cfg["fractions"], cfg["fraction"], [],
                                                    sweeps=False, injection=False)
                    if c.mode == "deactivate" and c.control == "selected"]
              for sel, path in zip(snakemake.params.selectors, snakemake.input.selections)}
log.info("lens: %d layers x %d conditions x %d utterances", adapter.n_layers, 1 + sum(map(len, conditions.values())),
         len(manifest))
table = lens_table(adapter, manifest, conditions, batch_size=spec["batch_size"], max_rows=cfg["max_rows"])
write_table(table, snakemake.output[0], "lens")
