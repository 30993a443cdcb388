# Logit lens (esn/lens.py): per decoder layer, the label probabilities read from the residual stream at the answer
# position through the final norm and lm_head, for the unmodified model and under each selector's main-size
# deactivation; then per-layer recall and the layer where the decision resolves. Main studies that run the sweeps.


rule lens:
    """The lens over the evaluation split: the model loaded once, every selector's sets deactivated in turn."""
    input:
        lib=library("lens.py"),
        selections=selections,
        manifest=lambda wc: manifest(wc.eval_corpus),
        model=model_files,
    output:
        "results/lens/{model}/{id_corpus}/{eval_corpus}.parquet",
    params:
        model=model_entry,
        intervention=canonical(PLAN.config["intervention"]),
        selectors=SELECTORS,
        device=PLAN.config["device"],
    threads: model_threads
    resources:
        gpu=model_gpu,
    log:
        "logs/lens/{model}/{id_corpus}/{eval_corpus}.log",
    conda:
        model_env
    script:
        "../scripts/lens.py"


rule lens_tables:
    """Per-layer recall of every class (and UAR) with bootstrap intervals, and each class's resolution layer."""
    input:
        lib=library("lens_tables.py"),
        table="results/lens/{model}/{id_corpus}/{eval_corpus}.parquet",
    output:
        recall="results/tables/lens/{model}/{id_corpus}/{eval_corpus}.recall.csv",
        resolution="results/tables/lens/{model}/{id_corpus}/{eval_corpus}.resolution.csv",
    params:
        bootstrap=PLAN.config["metrics"]["bootstrap"],
        unit=PLAN.config["metrics"]["bootstrap_unit"],
        seed=PLAN.config["seed"],
    log:
        "logs/lens_tables/{model}/{id_corpus}/{eval_corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/lens_tables.py"

