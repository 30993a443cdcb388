from esn.selectors import save_selection, select
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
sel, variant = snakemake.params.selection, snakemake.wildcards.variant
per_emotion, seed = None, snakemake.params.seed
if variant != "all":  # identification-size sweep: "n{size}s{seed}"
    size, _, s = variant[1:].partition("s")
    per_emotion, seed = int(size), int(s)
options = {"quantile": sel["lape_quantile"], "assign": sel["lape_assign"]} if snakemake.wildcards.selector == "lape" else {}
ds = select(snakemake.input.store, snakemake.wildcards.selector, position=sel["position"],
            correct_only=sel["correct_only"], per_emotion=per_emotion, seed=seed, **options)
save_selection(ds, snakemake.output[0])
log.info("selection %s/%s: %s utterances per emotion", snakemake.wildcards.selector, variant,
         dict(zip(ds["emotion"].values.tolist(), ds["n_utterances"].values.tolist())))
