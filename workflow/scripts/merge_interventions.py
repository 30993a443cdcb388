from esn.tables import merge_interventions, write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
shards = list(snakemake.input.shards)  # output-major: each output's n shard tables in shard order
n = len(shards) // len(snakemake.output)
for i, out in enumerate(snakemake.output):
    table = merge_interventions(shards[i * n:(i + 1) * n])
    write_table(table, out, "interventions")
    log.info("merged %d shard(s) into %s: %d rows", n, out, len(table))
