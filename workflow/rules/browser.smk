# The ESN browser: a static site per (model, identification corpus), read from the store, the selections and
# the metric tables (no model run). Shown in `snakemake --report` through its index page.


rule browser:
    """Index of every selector × emotion set (sizes, overlaps, causal results, the emotion's steering vector where
    the study steers) and a page per top neuron."""
    input:
        lib=library("browser.py"),
        store="results/activations/{model}/{corpus}.zarr",
        manifest=lambda wc: manifest(wc.corpus),
        selections=selections,
        delta_recall=browser_tables("delta_recall"),
        conditions=browser_tables("conditions"),
        steering_delta=lambda wc: PLAN.browser_steering(wc.model, wc.corpus, "delta_recall"),
        steering_conditions=lambda wc: PLAN.browser_steering(wc.model, wc.corpus, "conditions"),
        steering_vectors=lambda wc: PLAN.browser_steering(wc.model, wc.corpus, "vectors"),
    output:
        site=report(directory("results/browser/{model}/{corpus}"), htmlindex="index.html",
                    caption="../report/browser.rst", category="{model}", subcategory="ESN browser",
                    labels={"figure": "ESN browser", "study": "identify {corpus}"}),
    params:
        selectors=SELECTORS,
        tables=lambda wc: PLAN.browser_table_keys(wc.model, wc.corpus),
        steering=lambda wc: PLAN.browser_steering_corpora(wc.model, wc.corpus),
        corpus_dir=lambda wc: f"resources/corpora/{wc.corpus}",
        fraction=PLAN.config["intervention"]["fraction"],
        top_neurons=PLAN.config["browser"]["top_neurons"],
        clips=PLAN.config["browser"]["clips"],
    log:
        "logs/browser/{model}/{corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/browser.py"
