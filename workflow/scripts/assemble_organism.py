from pathlib import Path

from esn.shipped import assemble
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
shipped = Path(snakemake.input.record).parent
record = assemble(shipped, Path(snakemake.output.weights).parent, recipe=snakemake.params.recipe)
log.info("assembled the shipped organism from %s: %d files verified by sha256, encoder %s (digest %s)",
         shipped, len(record["files"]), record["encoder"]["name"], record["encoder"]["tower_sha256"])
