# A population of organisms (config `population`): every organism's main-size tables gathered, and one figure.
if POPULATION:

    rule population_table:
        """Per organism × study × selector × emotion at the main set size, layer knockout and held-out UAR per
        organism, and the population summary: mean over organisms, bootstrap CI over organisms, k of N."""
        input:
            lib=LIB["population"],
            deltas=population_tables("delta_recall"),
            summaries=population_tables("summary"),
            knockouts=[f"results/tables/knockout/{k['organism']}/{k['evaluate']}.csv" for k in population_knockout_keys()],
            metrics=[f"{config['models'][m]['path']}/metrics.json" for m in POPULATION],
        output:
            organisms=f"{POPULATION_DIR}/organisms.csv",
            knockout=f"{POPULATION_DIR}/knockout.csv",
            heldout=f"{POPULATION_DIR}/heldout.csv",
            summary=f"{POPULATION_DIR}/summary.csv",
        params:
            tables=population_keys(),
            knockout_keys=population_knockout_keys(),
            organisms=POPULATION,
            fraction=config["intervention"]["fraction"],
            bootstrap=config["metrics"]["bootstrap"],
            seed=config["seed"],
        log:
            f"logs/population/{config['population']['model']}.log",
        conda:
            "../envs/esn.yaml"
        script:
            "../scripts/population.py"

    rule figure_population:
        """One point per organism beside the population mean: specificity, self vs others drop, layer knockout."""
        input:
            lib=LIB["figures"],
            organisms=rules.population_table.output.organisms,
            knockout=rules.population_table.output.knockout,
            heldout=rules.population_table.output.heldout,
            summary=rules.population_table.output.summary,
        output:
            pdf=f"{POPULATION_FIGURE}.pdf",
            png=report(f"{POPULATION_FIGURE}.png", caption="../report/population.rst", category="population",
                       labels={"figure": "population of organisms"}),
        params:
            selectors=SELECTORS,
            fraction=config["intervention"]["fraction"],
            organisms=POPULATION,
        log:
            f"logs/figures/population/{config['population']['model']}.log",
        conda:
            "../envs/esn.yaml"
        script:
            "../scripts/figure.py"
