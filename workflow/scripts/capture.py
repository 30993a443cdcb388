from pathlib import Path

import torch

from esn.capture import capture, store_order
from esn.models import load_adapter
from esn.prepare import cap_identification, load_manifest
from esn.sites import site_groups
from esn.workflow import file_hash, setup_logging

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, cap = snakemake.params.model, snakemake.params.capture
shard, n_shards = int(snakemake.wildcards.shard), int(snakemake.wildcards.n)
manifest = load_manifest(Path(snakemake.input.manifest).parent)
# the cap is drawn over the whole corpus, before sharding, so every shard stores the same draw
manifest, capped = cap_identification(manifest, cap["max_per_emotion"], snakemake.config["seed"])
labels = snakemake.config["corpora"][snakemake.wildcards.corpus]["classes"]  # the closed label set
# shards take every n-th utterance in duration order: balanced lengths, independent jobs
part = store_order(manifest).iloc[shard::n_shards]
adapter = load_adapter(spec, labels, snakemake.params.device)
groups = site_groups(spec["site"], cap["positions"])  # a tower site has only the audio frames
summary = capture(adapter, part, snakemake.output[0], groups=groups, batch_size=spec["batch_size"],
                  dtype=cap["dtype"], attribution=cap["attribution"], block_size=cap["block_size"],
                  mode=cap["mode"], max_new_tokens=cap["max_new_tokens"], batch_tokens=spec.get("batch_tokens"),
                  attrs={"config_hash": snakemake.params.config_hash, "manifest_hash": file_hash(snakemake.input.manifest),
                         "corpus": snakemake.wildcards.corpus, "model": snakemake.wildcards.model,
                         "shard": f"{shard}-of-{n_shards}", "seed": str(snakemake.config["seed"]), **capped})
log.info("capture summary: %s", summary)
