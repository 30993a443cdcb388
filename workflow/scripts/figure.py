"""Every figure rule (figure_<kind>): read the rule's tables and call esn.figures.plot_<kind>."""

import json

from esn import figures as F
from esn.tables import ALL, CORRECT_ONLY
from esn.workflow import setup_logging

log = setup_logging(snakemake.log[0])
kind = snakemake.rule.removeprefix("figure_")
inp, p, wc = snakemake.input, snakemake.params, snakemake.wildcards
out = [snakemake.output.pdf, snakemake.output.png]
study = (f"{wc.model} · identify {wc.id_corpus} · evaluate {wc.eval_corpus}" if "eval_corpus" in wc.keys()
         else wc.get("model", ""))


def all_selector_rows(paths):
    """Each selector's table (selector column added), every identification variant."""
    table = F.read_tables(paths, [{"selector": s} for s in p.selectors])
    table["variant"] = table["variant"].fillna("all")  # the unmodified model's row has no variant
    return table


def per_selector(paths):
    """Rows of sets identified from the full identification set (and the unmodified model)."""
    table = all_selector_rows(paths)
    return table[table["variant"] == "all"]


if kind == "delta_recall":
    F.plot_delta_recall(per_selector(inp.tables), out, fraction=p.fraction, selectors=p.selectors, title=study)
elif kind == "specificity":
    F.plot_specificity(per_selector(inp.tables), out, fraction=p.fraction, selectors=p.selectors, title=study,
                       summary=per_selector(inp.summaries))
elif kind == "strength":
    F.plot_strength(per_selector(inp.tables), out, fraction=p.fraction, selectors=p.selectors, title=study)
elif kind == "set_size":
    F.plot_set_size(per_selector(inp.tables), out, selectors=p.selectors, main_fraction=p.fraction, title=study)
elif kind == "layers":
    knockout = F.read_tables(inp.knockout) if len(inp.knockout) else None
    F.plot_layers(F.read_tables([inp.counts]), knockout, out, selectors=p.selectors, fraction=p.fraction, title=study)
elif kind == "overlap":
    F.plot_overlap(F.read_tables([inp.emotions]), F.read_tables([inp.selectors]), out, selectors=p.selectors,
                   fraction=p.fraction, title=f"{wc.model} · identify {wc.id_corpus}")
elif kind == "id_size":
    rows = all_selector_rows(inp.full)
    sweep = rows[~rows["variant"].isin([ALL, CORRECT_ONLY])].copy()
    sweep["n"], sweep["seed"] = zip(*[F.parse_variant(v) for v in sweep["variant"]]) if len(sweep) else ([], [])
    F.plot_id_size(sweep, rows[rows["variant"] == "all"], F.read_tables([inp.stability]), out,
                   fraction=p.fraction, selectors=p.selectors, title=study)
elif kind == "transfer":
    keys = [dict(identify=i, evaluate=e, selector=s) for i, e, s in p.studies]
    F.plot_transfer(F.read_tables(inp.tables, keys), out, fraction=p.fraction, selectors=p.selectors, title=study)
elif kind == "injection":
    F.plot_injection(F.read_tables(inp.tables, [{"selector": s} for s in p.selectors]), out, fraction=p.fraction,
                     selectors=p.selectors, title=study)
elif kind == "correct_only":
    F.plot_correct_only(all_selector_rows(inp.summaries), F.read_tables([inp.stability]), out, fraction=p.fraction,
                        selectors=p.selectors, title=study)
elif kind == "population":
    F.plot_population(*(F.read_tables([t]) for t in (inp.organisms, inp.knockout, inp.heldout, inp.summary)), out,
                      fraction=p.fraction, selectors=p.selectors, title=f"population of {len(p.organisms)} organisms")
elif kind == "confusion":
    with open(inp.metrics) as f:
        F.plot_confusion(json.load(f), out, title=study)
else:
    raise ValueError(f"workflow/scripts/figure.py: no figure for rule {snakemake.rule!r}")
log.info("%s: wrote %s", kind, ", ".join(out))
