from esn.store import merge
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
merge(list(snakemake.input.shards), snakemake.output[0])
log.info("merged %d shard(s) into %s", len(snakemake.input.shards), snakemake.output[0])
