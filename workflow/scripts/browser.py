"""Rule browser: the static ESN site of one (model, identification corpus) from its store, selections and tables."""

from esn.browser import StudyTables, build_site
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
inp, p, wc = snakemake.input, snakemake.params, snakemake.wildcards
tables = [StudyTables(e, s, d, c) for (e, s), d, c in zip(p.tables, inp.delta_recall, inp.conditions)]
counts = build_site(snakemake.output.site, store_path=inp.store, corpus_dir=p.corpus_dir,
                    selections=dict(zip(p.selectors, inp.selections)), tables=tables, fraction=p.fraction,
                    top=p.top_neurons, clips=p.clips, title=f"{wc.model} · identify {wc.corpus}")
log.info("browser: wrote %s (%s)", snakemake.output.site, counts)
