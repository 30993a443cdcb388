# A population of organisms (config `population`): every organism's main-size tables gathered, and one figure.
if POPULATION:

    rule population_table:
        """Per organism × study × selector × emotion at the main set size, layer knockout and held-out UAR per
        organism, each organism's random draws, and the population summary: mean over organisms, bootstrap CI over
        organisms, k of N, and the rate at which random draws pass the same test (the claim's base rate)."""
        input:
            lib=library("population.py"),
            deltas=PLAN.population_tables("delta_recall"),
            summaries=PLAN.population_tables("summary"),
            knockouts=[f"results/tables/knockout/{k['organism']}/{k['evaluate']}.csv"
                       for k in PLAN.population_knockout_keys()],
            metrics=[f"{PLAN.config['models'][m]['path']}/metrics.json" for m in POPULATION],
        output:
            organisms=f"{PLAN.population_dir}/organisms.csv",
            draws=f"{PLAN.population_dir}/draws.csv",
            knockout=f"{PLAN.population_dir}/knockout.csv",
            heldout=f"{PLAN.population_dir}/heldout.csv",
            summary=f"{PLAN.population_dir}/summary.csv",
        params:
            tables=PLAN.population_keys(),
            knockout_keys=PLAN.population_knockout_keys(),
            organisms=POPULATION,
            fraction=PLAN.config["intervention"]["fraction"],
            bootstrap=PLAN.config["metrics"]["bootstrap"],
            seed=PLAN.config["seed"],
        log:
            f"logs/population/{PLAN.config['population']['model']}.log",
        conda:
            "../envs/esn.yaml"
        script:
            "../scripts/population.py"
