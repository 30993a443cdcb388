rule intervene:
    """Deactivation and gain of each emotion's set (and its random control) on the evaluation split."""
    input:
        lib=LIB["intervene"],
        selection="results/neurons/{model}/{id_corpus}/{selector}.zarr",
        manifest=lambda wc: manifest(wc.eval_corpus),
        model=model_files,
    output:
        "results/interventions/{model}/{id_corpus}/{selector}/{eval_corpus}.parquet",
    params:
        model=lambda wc: canonical(config["models"][wc.model]),
        intervention=canonical(config["intervention"]),
        device=config["device"],
    threads: 2
    resources:
        gpu=model_gpu,
    log:
        "logs/intervene/{model}/{id_corpus}/{selector}/{eval_corpus}.log",
    conda:
        model_env
    script:
        "../scripts/intervene.py"


rule knockout:
    """Each decoder layer's whole MLP zeroed: which layers carry the decision at all."""
    input:
        lib=LIB["intervene"],
        manifest=lambda wc: manifest(wc.eval_corpus),
        model=model_files,
    output:
        "results/interventions/{model}/knockout/{eval_corpus}.parquet",
    params:
        model=lambda wc: canonical(config["models"][wc.model]),
        intervention=canonical(config["intervention"]),
        device=config["device"],
    threads: 2
    resources:
        gpu=model_gpu,
    log:
        "logs/knockout/{model}/{eval_corpus}.log",
    conda:
        model_env
    script:
        "../scripts/intervene.py"


rule metrics:
    """Accuracy, recall, UAR, macro-F1, Δrecall, specificity and flip rate with bootstrap CIs."""
    input:
        lib=LIB["metrics"],
        table="results/interventions/{path}.parquet",
    output:
        conditions="results/tables/interventions/{path}.conditions.csv",
        delta="results/tables/interventions/{path}.delta_recall.csv",
        summary="results/tables/interventions/{path}.summary.csv",
    params:
        bootstrap=config["metrics"]["bootstrap"],
        unit=config["metrics"]["bootstrap_unit"],
        seed=config["seed"],
    log:
        "logs/metrics/{path}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/metrics.py"


rule knockout_table:
    input:
        lib=LIB["metrics"],
        table="results/interventions/{model}/knockout/{eval_corpus}.parquet",
    output:
        "results/tables/knockout/{model}/{eval_corpus}.csv",
    params:
        bootstrap=config["metrics"]["bootstrap"],
        unit=config["metrics"]["bootstrap_unit"],
        seed=config["seed"],
    log:
        "logs/knockout_table/{model}/{eval_corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/knockout_table.py"
