import pandas as pd

from esn.lens import lens_recall, resolution
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
table = pd.read_parquet(snakemake.input.table)
labels = [c[2:] for c in table.columns if c.startswith("p_")]
recall = lens_recall(table, labels, n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed,
                     unit=snakemake.params.unit)
resolved = resolution(recall)
recall.to_csv(snakemake.output.recall, index=False)
resolved.to_csv(snakemake.output.resolution, index=False)
log.info("resolution layers:\n%s", resolved.to_string(index=False))
