# Figures: one rule per figure kind declared in esn/figures/ (esn/figures/registry.py: its inputs, config values,
# caption workflow/report/<kind>.rst, and when it applies). Each reads only tables, so a style change re-runs
# only these rules; all run workflow/scripts/figure.py, which calls the kind's `draw`.
from esn.figures import FIGURES

FIGURE_STUDY = "identify {id_corpus}, evaluate {eval_corpus}"
#: scope -> (output path without suffix, log, report subcategory, the report's "study" label)
FIGURE_PLACES = {
    "study": ("results/figures/{model}/{id_corpus}/{eval_corpus}/{kind}",
              "logs/figures/{model}/{id_corpus}/{eval_corpus}/{kind}.log", FIGURE_STUDY, FIGURE_STUDY),
    "model": ("results/figures/{model}/{kind}", "logs/figures/{model}/{kind}.log", "across studies", "all studies"),
    "organism": ("results/figures/{model}/{kind}", "logs/figures/{model}/{kind}.log", "model organism",
                 "held-out split"),
    "population": (PLAN.population_figure, "logs/figures/population/{population}.log", None, None),
    "cue_conflict": ("results/figures/{model}/{kind}/{corpus}", "logs/figures/{model}/{kind}/{corpus}.log",
                     "cue conflict", "{corpus}"),
}
#: the config values a kind may ask for (`params` of its declaration), by name
FIGURE_PARAMS = {
    "selectors": SELECTORS,
    "fraction": PLAN.config["intervention"]["fraction"],
    "fractions": PLAN.config["intervention"]["fractions"],
    "alphas": PLAN.config["intervention"]["alphas"],
    "id_sizes": PLAN.config["selection"]["id_sizes"],
    "id_seeds": PLAN.config["selection"]["id_seeds"],
    "studies": transfer_keys,
    "organism": lambda wildcards: canonical(PLAN.config["organism"]),
    "organisms": POPULATION,
}


for spec in FIGURES.values():
    if spec.scope == "population" and not POPULATION:
        continue
    path, log_path, subcategory, study = FIGURE_PLACES[spec.scope]
    path = path.replace("{kind}", spec.kind)

    rule:
        name:
            f"figure_{spec.kind}"
        input:
            lib=library("figure.py"),
            **{name: figure_input(source) for name, source in spec.inputs.items()},
        output:
            pdf=f"{path}.pdf",
            png=figure_report(spec, f"{path}.png", subcategory, study),
        params:
            **{name: FIGURE_PARAMS[name] for name in spec.params},
        log:
            log_path.replace("{kind}", spec.kind).replace("{population}", str(PLAN.config["population"].get("model"))),
        conda:
            "../envs/esn.yaml"
        script:
            "../scripts/figure.py"

    workflow.get_rule(f"figure_{spec.kind}").docstring = spec.description
