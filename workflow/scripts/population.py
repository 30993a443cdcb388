import json

from esn import population as P
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
inp, p = snakemake.input, snakemake.params
organisms = P.organism_table([{**k, "delta": d, "summary": s} for k, d, s in zip(p.tables, inp.deltas, inp.summaries)],
                             p.fraction)
knockout = P.knockout_table([{**k, "knockout": t} for k, t in zip(p.knockout_keys, inp.knockouts)])
metrics = {}
for name, path in zip(p.organisms, inp.metrics):
    with open(path) as f:
        metrics[name] = json.load(f)
heldout = P.heldout_table(metrics)
summary = P.population_summary(organisms, knockout, heldout, n_boot=p.bootstrap, seed=p.seed)
P.write(snakemake.output, {"organisms": organisms, "knockout": knockout, "heldout": heldout, "summary": summary})
log.info("population of %d organisms:\n%s", len(p.organisms),
         "\n".join(P.claim_sentence(r) for r in summary.to_dict("records")))
