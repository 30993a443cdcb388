from esn.claims import run_claims
from esn.metrics import summarize
from esn.tables import read_table, write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
table = read_table(snakemake.input.table, "interventions")
labels = [c[2:] for c in table.columns if c.startswith("p_")]
out = summarize(table, labels, n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed,
                unit=snakemake.params.unit)
for kind, path in (("conditions", snakemake.output.conditions), ("delta_recall", snakemake.output.delta),
                   ("summary", snakemake.output.summary), ("injection", snakemake.output.injection)):
    write_table(out[kind], path, kind)
log.info("mean over targets:\n%s", out["summary"].to_string(index=False))
claims = run_claims(out["summary"])
if len(claims):  # each claim against the rate at which this run's random draws pass the same test (esn.claims)
    log.info("claims against their random draws:\n%s", claims.to_string(index=False))
