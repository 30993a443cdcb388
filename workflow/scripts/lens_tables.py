from esn.lens import lens_recall, resolution
from esn.tables import read_table, write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
table = read_table(snakemake.input.table, "lens")
labels = [c[2:] for c in table.columns if c.startswith("p_")]
recall = lens_recall(table, labels, n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed,
                     unit=snakemake.params.unit)
resolved = resolution(recall)
write_table(recall, snakemake.output.recall, "lens_recall")
write_table(resolved, snakemake.output.resolution, "lens_resolution")
log.info("resolution layers:\n%s", resolved.to_string(index=False))
