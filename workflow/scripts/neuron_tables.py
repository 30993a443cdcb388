from esn.selectors import (counts_per_layer, open_selection, overlap_between_emotions, overlap_between_selectors,
                           stability)
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
fraction, selectors, variants = snakemake.params.fraction, snakemake.params.selectors, snakemake.params.variants
paths = iter(snakemake.input.selections)
loaded = {(s, v): open_selection(next(paths)) for s in selectors for v in variants}  # expand() order: selector, variant
main = {s: loaded[(s, "all")] for s in selectors}
counts_per_layer(main, fraction).to_csv(snakemake.output.counts, index=False)
import pandas as pd

pd.concat([overlap_between_emotions(main[s], fraction).assign(selector=s) if "selector" not in
           overlap_between_emotions(main[s], fraction).columns else overlap_between_emotions(main[s], fraction)
           for s in selectors]).to_csv(snakemake.output.emotions, index=False)
overlap_between_selectors(main, fraction).to_csv(snakemake.output.selectors, index=False)
pd.concat([stability({v: loaded[(s, v)] for v in variants}, fraction).assign(selector=s) for s in selectors]
          ).to_csv(snakemake.output.stability, index=False)
