# Steering vectors beside neuron gain (esn/steering.py): mean-difference directions in the residual stream at one
# decoder layer, sized to neuron gain's change of that layer's MLP output, over the gain grid. Studies with sweeps.


rule steer:
    """Steering vectors beside neuron gain (esn/steering.py): one capture pass over the identification clips for the
    mean-difference directions at one decoder layer and the norm neuron gain changes the layer's MLP output by
    (every selector's sets at the main size; the reference selector's fixes the vectors' norm), then the gain
    grid's α with each vector and with a random direction of the same norm. The table is an intervention table,
    which the metrics rule summarises as it is."""
    input:
        lib=library("steer.py"),
        selections=selections,
        id_manifest=lambda wc: manifest(wc.id_corpus),
        manifest=lambda wc: manifest(wc.eval_corpus),
        model=model_files,
    output:
        table="results/interventions/{model}/{id_corpus}/steering/{eval_corpus}.parquet",
        vectors="results/tables/steering/{model}/{id_corpus}/{eval_corpus}.vectors.csv",
    params:
        model=model_entry,
        intervention=canonical(PLAN.config["intervention"]),
        steering=canonical(PLAN.config["steering"]),
        selector=lambda wc: steering_selector(),
        selectors=SELECTORS,
        device=PLAN.config["device"],
    threads: model_threads
    resources:
        gpu=model_gpu,
    log:
        "logs/steer/{model}/{id_corpus}/{eval_corpus}.log",
    conda:
        model_env
    script:
        "../scripts/steer.py"
