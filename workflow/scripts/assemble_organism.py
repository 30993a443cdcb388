from pathlib import Path

from esn.shipped import assemble
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
record = assemble(snakemake.params.shipped, Path(snakemake.output.weights).parent, recipe=snakemake.params.recipe)
log.info("assembled the shipped organism from %s: %d files verified by sha256, encoder %s (digest %s)",
         snakemake.params.shipped, len(record["files"]), record["encoder"]["name"], record["encoder"]["tower_sha256"])
