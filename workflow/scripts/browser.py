"""Rule browser: the static ESN site of one (model, identification corpus) from its store, selections and tables."""

from esn.browser import SteeringTables, StudyTables, build_site
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
inputs, params, wildcards = snakemake.input, snakemake.params, snakemake.wildcards
tables = [StudyTables(e, s, d, c) for (e, s), d, c in zip(params.tables, inputs.delta_recall, inputs.conditions)]
steering = [SteeringTables(*t) for t in zip(params.steering, inputs.steering_delta, inputs.steering_conditions,
                                            inputs.steering_vectors)]
counts = build_site(snakemake.output.site, store_path=inputs.store, corpus_dir=params.corpus_dir,
                    selections=dict(zip(params.selectors, inputs.selections)), tables=tables,
                    fraction=params.fraction, top=params.top_neurons, clips=params.clips,
                    title=f"{wildcards.model} · identify {wildcards.corpus}", steering=steering)
log.info("browser: wrote %s (%s)", snakemake.output.site, counts)
