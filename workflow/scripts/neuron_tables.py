import pandas as pd

from esn.selectors import (counts_per_layer, open_selection, overlap_between_emotions, overlap_between_selectors,
                           stability, ties_at_cut)
from esn.tables import write_table
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
fraction, selectors = snakemake.params.fraction, snakemake.params.selectors
loaded = {s: open_selection(p) for s, p in zip(selectors, snakemake.input.selections)}
main = {s: ds.sel(variant="all") for s, ds in loaded.items()}
out = snakemake.output
write_table(counts_per_layer(main, fraction), out.counts, "counts_per_layer")
write_table(overlap_between_emotions(main, fraction), out.emotions, "overlap_emotions")
write_table(overlap_between_selectors(main, fraction), out.selectors, "overlap_selectors")
write_table(pd.concat([stability({str(v): ds.sel(variant=v) for v in ds["variant"].values}, fraction)
                       for ds in loaded.values()]), out.stability, "stability")
write_table(pd.concat([ties_at_cut(ds, f) for ds in main.values() for f in snakemake.params.fractions]), out.ties,
            "ties_at_cut")
