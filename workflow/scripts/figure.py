"""Every figure rule (figure_<kind>): the kind's `draw` (esn/figures/registry.py) on the rule's tables."""

from esn.figures import FIGURES, FigureJob
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
kind = snakemake.rule.removeprefix("figure_")
wildcards = snakemake.wildcards
study = (f"{wildcards.model} · identify {wildcards.id_corpus} · evaluate {wildcards.eval_corpus}"
         if "eval_corpus" in wildcards.keys() else wildcards.get("model", ""))
job = FigureJob(snakemake.input, snakemake.params, [snakemake.output.pdf, snakemake.output.png], study,
                dict(wildcards.items()))
FIGURES[kind].draw(job)
log.info("%s: wrote %s", kind, ", ".join(job.out))
