import pandas as pd

from esn.selectors import (counts_per_layer, open_selection, overlap_between_emotions, overlap_between_selectors,
                           stability, ties_at_cut)
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
fraction, selectors = snakemake.params.fraction, snakemake.params.selectors
loaded = {s: open_selection(p) for s, p in zip(selectors, snakemake.input.selections)}
main = {s: ds.sel(variant="all") for s, ds in loaded.items()}
counts_per_layer(main, fraction).to_csv(snakemake.output.counts, index=False)
overlap_between_emotions(main, fraction).to_csv(snakemake.output.emotions, index=False)
overlap_between_selectors(main, fraction).to_csv(snakemake.output.selectors, index=False)
pd.concat([stability({str(v): ds.sel(variant=v) for v in ds["variant"].values}, fraction) for ds in loaded.values()]
          ).to_csv(snakemake.output.stability, index=False)
pd.concat([ties_at_cut(ds, f) for ds in main.values() for f in snakemake.params.fractions]
          ).to_csv(snakemake.output.ties, index=False)
