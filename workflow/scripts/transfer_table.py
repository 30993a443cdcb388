from esn.metrics import transfer_table
from esn.tables import read_tables, write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
delta = read_tables(snakemake.input.tables, "delta_recall",
                    [dict(identify=i, evaluate=e, selector=s) for i, e, s in snakemake.params.studies])
table = transfer_table(delta, snakemake.params.fraction)
write_table(table, snakemake.output[0], "transfer")
log.info("transfer, mean specificity over targets:\n%s",
         table[table["class"] == "specificity"].groupby(["selector", "control", "identify", "evaluate"])
         ["delta_recall"].mean().unstack("evaluate").round(3).to_string())
