rule select:
    """Score and rank neurons per emotion from the store alone (plus the seeded random control)."""
    input:
        lib=library("select.py"),
        store="results/activations/{model}/{id_corpus}.zarr",
    output:
        directory("results/neurons/{model}/{id_corpus}/{selector}.zarr"),
    params:
        selection=canonical(PLAN.config["selection"]),
        site=lambda wc: PLAN.models[wc.model]["site"],
        variants=PLAN.variants(),
        seed=PLAN.config["seed"],
        random_draws=PLAN.config["intervention"]["random_draws"],
    priority: 20
    log:
        "logs/select/{model}/{id_corpus}/{selector}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/select.py"


rule neuron_tables:
    """ESN counts per layer, overlaps between emotions and selectors, stability across identification sizes,
    and how many neurons tied at each set's cut (and were decided by which key)."""
    input:
        lib=library("neuron_tables.py"),
        selections=selections,
    output:
        counts="results/tables/neurons/{model}/{id_corpus}/counts_per_layer.csv",
        emotions="results/tables/neurons/{model}/{id_corpus}/overlap_emotions.csv",
        selectors="results/tables/neurons/{model}/{id_corpus}/overlap_selectors.csv",
        stability="results/tables/neurons/{model}/{id_corpus}/stability.csv",
        ties="results/tables/neurons/{model}/{id_corpus}/ties_at_cut.csv",
    params:
        fraction=PLAN.config["intervention"]["fraction"],
        fractions=PLAN.config["intervention"]["fractions"],
        selectors=SELECTORS,
    log:
        "logs/neuron_tables/{model}/{id_corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/neuron_tables.py"
