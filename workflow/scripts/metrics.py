import pandas as pd

from esn.metrics import summarize
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
table = pd.read_parquet(snakemake.input.table)
labels = [c[2:] for c in table.columns if c.startswith("p_")]
out = summarize(table, labels, n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed,
                unit=snakemake.params.unit)
out["conditions"].to_csv(snakemake.output.conditions, index=False)
out["delta_recall"].to_csv(snakemake.output.delta, index=False)
out["summary"].to_csv(snakemake.output.summary, index=False)
out["injection"].to_csv(snakemake.output.injection, index=False)
log.info("mean over targets:\n%s", out["summary"].to_string(index=False))
