import pandas as pd

from esn.metrics import transfer_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
delta = pd.concat([pd.read_csv(path, keep_default_na=False, na_values=[""]).assign(identify=i, evaluate=e, selector=s)
                   for path, (i, e, s) in zip(snakemake.input.tables, snakemake.params.studies)], ignore_index=True)
table = transfer_table(delta, snakemake.params.fraction)
table.to_csv(snakemake.output[0], index=False)
log.info("transfer, mean specificity over targets:\n%s",
         table[table["class"] == "specificity"].groupby(["selector", "control", "identify", "evaluate"])
         ["delta_recall"].mean().unstack("evaluate").round(3).to_string())
