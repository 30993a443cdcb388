from dataclasses import fields
from pathlib import Path

import pandas as pd

from esn.organism import OrganismConfig, train_organism
from esn.prepare import load_manifest
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
known = {f.name for f in fields(OrganismConfig)}
cfg = OrganismConfig(**{k: v for k, v in snakemake.params.organism.items() if k in known - {"threads"}},
                     prompt=snakemake.params.prompt, seed=snakemake.params.seed, threads=snakemake.threads)
manifest = pd.concat([load_manifest(Path(m).parent) for m in snakemake.input.manifests], ignore_index=True)
metrics = train_organism(manifest, Path(snakemake.output.metrics).parent, list(snakemake.params.labels), cfg,
                         recipe=snakemake.params.recipe)
for corpus, m in metrics["corpora"].items():
    log.info("organism on %s: held-out UAR %.3f, accuracy %.3f (chance %.3f), knockout UAR %s", corpus,
             m["heldout_uar"], m["heldout_accuracy"], metrics["chance"], m["knockout_uar"])
log.info("organism trained in %.0f s", metrics["train_seconds"])
