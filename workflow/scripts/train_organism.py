from dataclasses import fields
from pathlib import Path

from esn.organism import OrganismConfig, train_organism
from esn.prepare import load_manifest
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
known = {f.name for f in fields(OrganismConfig)}
cfg = OrganismConfig(**{k: v for k, v in snakemake.params.organism.items() if k in known},
                     prompt=snakemake.params.prompt, seed=snakemake.params.seed, threads=snakemake.threads)
metrics = train_organism(load_manifest(Path(snakemake.input.manifest).parent), Path(snakemake.output.metrics).parent,
                         list(snakemake.params.labels), cfg)
log.info("organism: held-out accuracy %.3f (chance %.3f), knockout %s, %.0f s",
         metrics["heldout_accuracy"], metrics["chance"], metrics["knockout_accuracy"], metrics["train_seconds"])
