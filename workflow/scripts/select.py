from esn.sites import site_groups
from esn.selectors import save_selection, select_variants
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
selection, selector = snakemake.params.selection, snakemake.wildcards.selector
options = {"quantile": selection["lape_quantile"], "assign": selection["lape_assign"]} if selector == "lape" else {}
ds = select_variants(snakemake.input.store, selector, snakemake.params.variants, position=site_groups(snakemake.params.site, [selection["position"]])[0],
                     correct_only=selection["correct_only"], seed=snakemake.params.seed,
                     random_draws=snakemake.params.random_draws, **options)
save_selection(ds, snakemake.output[0])
log.info("selection %s: variants %s; utterances per emotion (all) %s", selector, list(ds["variant"].values),
         dict(zip(ds["emotion"].values.tolist(), ds["n_utterances"].sel(variant="all").values.tolist())))
