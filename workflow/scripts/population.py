import json

from esn import population as P
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
inputs, params = snakemake.input, snakemake.params
tables = [{**k, "delta": d, "summary": s} for k, d, s in zip(params.tables, inputs.deltas, inputs.summaries)]
organisms = P.organism_table(tables, params.fraction)
draws = P.draws_table(tables, params.fraction)
knockout = P.knockout_table([{**k, "knockout": t} for k, t in zip(params.knockout_keys, inputs.knockouts)])
metrics = {}
for name, path in zip(params.organisms, inputs.metrics):
    with open(path) as f:
        metrics[name] = json.load(f)
heldout = P.heldout_table(metrics)
summary = P.population_summary(organisms, knockout, heldout, draws, n_boot=params.bootstrap, seed=params.seed)
P.write(snakemake.output, {"organisms": organisms, "draws": draws, "knockout": knockout, "heldout": heldout,
                           "summary": summary})
log.info("population of %d organisms:\n%s", len(params.organisms),
         "\n".join(P.claim_sentence(r) for r in summary.to_dict("records")))
