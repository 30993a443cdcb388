"""Every figure rule (figure_<kind>): the kind's `draw` (esn/figures/registry.py) on the rule's tables."""

from esn.figures import FIGURES, FigureJob
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
kind = snakemake.rule.removeprefix("figure_")
wc = snakemake.wildcards
study = (f"{wc.model} · identify {wc.id_corpus} · evaluate {wc.eval_corpus}" if "eval_corpus" in wc.keys()
         else wc.get("model", ""))
job = FigureJob(snakemake.input, snakemake.params, [snakemake.output.pdf, snakemake.output.png], study, dict(wc.items()))
FIGURES[kind].draw(job)
log.info("%s: wrote %s", kind, ", ".join(job.out))
