from esn.metrics import CARRIED, summarize
from esn.tables import read_table, write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
table = read_table(snakemake.input.table, "interventions")
labels = [c[2:] for c in table.columns if c.startswith("p_")]
rows = summarize(table, labels, n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed,
                 unit=snakemake.params.unit)["conditions"]
keep = ["mode", "layer", "accuracy", "accuracy_lo", "accuracy_hi", "uar", "uar_lo", "uar_hi", "uar_change",
        "uar_change_lo", "uar_change_hi", "bootstrap_unit"]
keep += [c for c in CARRIED if c in rows.columns]
write_table(rows[keep + [c for c in rows.columns if c.startswith("recall_")]], snakemake.output[0], "knockout")
log.info("knockout:\n%s", rows[["mode", "layer", "accuracy"]].to_string(index=False))
