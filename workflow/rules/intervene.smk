rule intervene:
    """Deactivation, gain and label-free injection with each emotion's set (and its random control) on shard
    {shard} of {n} of the evaluation split, for every selector in one job: the model is loaded once and every
    selector's conditions share each clip's audio embedding and unmodified pass. A study without sweeps
    (`studies[i].sweeps`; by default a transfer study, identify != evaluate) runs main-size deactivation and one
    random draw. Rows are committed per block of clips in {params.partial}: a killed job resumes there."""
    input:
        lib=library("intervene.py"),
        selections=expand("results/neurons/{{model}}/{{id_corpus}}/{selector}.zarr", selector=SELECTORS),
        manifest=lambda wc: manifest(wc.eval_corpus),
        model=model_files,
    output:
        temp(expand("results/interventions/{{model}}/{{id_corpus}}/{{eval_corpus}}.shards/{{shard}}-of-{{n}}/"
                    "{selector}.parquet", selector=SELECTORS)),
    params:
        model=model_entry,
        intervention=PLAN.intervention_settings(),
        sweeps=study_sweeps,
        selectors=SELECTORS,
        device=PLAN.config["device"],
        partial="results/interventions/{model}/{id_corpus}/{eval_corpus}.shards/{shard}-of-{n}.partial",
    threads: model_threads
    priority: 10
    resources:
        gpu=model_gpu,
    log:
        "logs/intervene/{model}/{id_corpus}/{eval_corpus}/{shard}-of-{n}.log",
    conda:
        model_env
    script:
        "../scripts/intervene.py"


rule merge_interventions:
    """A study's shard tables as the one table per selector an unsharded job writes (same rows, order, types)."""
    input:
        lib=library("merge_interventions.py"),
        shards=intervention_shards,
    output:
        expand("results/interventions/{{model}}/{{id_corpus}}/{selector}/{{eval_corpus}}.parquet", selector=SELECTORS),
    log:
        "logs/merge_interventions/{model}/{id_corpus}/{eval_corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/merge_interventions.py"


rule knockout:
    """Each decoder layer's whole MLP zeroed, on shard {shard} of {n} of the evaluation split: which layers carry
    the decision at all."""
    input:
        lib=library("intervene.py"),
        manifest=lambda wc: manifest(wc.eval_corpus),
        model=model_files,
    output:
        temp("results/interventions/{model}/knockout/{eval_corpus}.shards/{shard}-of-{n}.parquet"),
    params:
        model=model_entry,
        intervention=PLAN.intervention_settings(),
        device=PLAN.config["device"],
        partial="results/interventions/{model}/knockout/{eval_corpus}.shards/{shard}-of-{n}.partial",
    threads: model_threads
    resources:
        gpu=model_gpu,
    log:
        "logs/knockout/{model}/{eval_corpus}/{shard}-of-{n}.log",
    conda:
        model_env
    script:
        "../scripts/intervene.py"


rule merge_knockout:
    input:
        lib=library("merge_interventions.py"),
        shards=knockout_shards,
    output:
        "results/interventions/{model}/knockout/{eval_corpus}.parquet",
    log:
        "logs/merge_knockout/{model}/{eval_corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/merge_interventions.py"


rule metrics:
    """Accuracy, recall, UAR, macro-F1, Δrecall, specificity, flip rate and label-free injection, with bootstrap CIs."""
    input:
        lib=library("metrics.py"),
        table="results/interventions/{path}.parquet",
    output:
        conditions="results/tables/interventions/{path}.conditions.csv",
        delta="results/tables/interventions/{path}.delta_recall.csv",
        summary="results/tables/interventions/{path}.summary.csv",
        injection="results/tables/interventions/{path}.injection.csv",
    params:
        bootstrap=PLAN.config["metrics"]["bootstrap"],
        unit=PLAN.config["metrics"]["bootstrap_unit"],
        seed=PLAN.config["seed"],
    log:
        "logs/metrics/{path}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/metrics.py"


rule knockout_table:
    input:
        lib=library("knockout_table.py"),
        table="results/interventions/{model}/knockout/{eval_corpus}.parquet",
    output:
        "results/tables/knockout/{model}/{eval_corpus}.csv",
    params:
        bootstrap=PLAN.config["metrics"]["bootstrap"],
        unit=PLAN.config["metrics"]["bootstrap_unit"],
        seed=PLAN.config["seed"],
    log:
        "logs/knockout_table/{model}/{eval_corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/knockout_table.py"


rule transfer_table:
    """Δrecall per (identify, evaluate, selector, control, target, class) at the main set size: every study of a
    model in one tidy table (the transfer matrix's numbers, with their CIs)."""
    input:
        lib=library("transfer_table.py"),
        tables=transfer_tables,
    output:
        "results/tables/transfer/{model}.csv",
    params:
        studies=transfer_keys,
        fraction=PLAN.config["intervention"]["fraction"],
    log:
        "logs/transfer_table/{model}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/transfer_table.py"
