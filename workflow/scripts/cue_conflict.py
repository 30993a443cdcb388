from pathlib import Path

import torch

from esn.cue_conflict import answers, summarize
from esn.interventions import evaluate
from esn.models import load_adapter
from esn.prepare import load_manifest
from esn.tables import write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, metrics = snakemake.params.model, snakemake.config["metrics"]
manifest = load_manifest(Path(snakemake.input.manifest).parent)  # every clip: nothing here is selected or trained
labels = snakemake.config["corpora"][snakemake.wildcards.corpus]["classes"]
adapter = load_adapter(spec, labels, snakemake.params.device)
table = evaluate(adapter, manifest, [], batch_size=spec["batch_size"], mode="score",
                 batch_tokens=spec.get("batch_tokens"))
clips = answers(table, manifest)
summary = summarize(clips, n_boot=metrics["bootstrap"], seed=snakemake.params.seed, unit=metrics["bootstrap_unit"])
write_table(clips, snakemake.output.answers, "cue_conflict")
write_table(summary, snakemake.output.summary, "cue_conflict_summary")
pooled = summary[summary["scope"] != "cell"]
for row in pooled.itertuples():
    log.info("%s clips: %s %.3f [%.3f, %.3f]", row.scope, row.cue, row.share, row.lo, row.hi)
