# Figures: each reads only tables (results/tables/...) and the esn/figures package, so a style change re-runs
# only these rules. One rule per figure kind; all run workflow/scripts/figure.py, which dispatches on the rule.

FIGURE_DIR = "results/figures/{model}/{id_corpus}/{eval_corpus}"
FIGURE_LOG = "logs/figures/{model}/{id_corpus}/{eval_corpus}"
FIGURE_CATEGORY = "{model}"
FIGURE_STUDY = "identify {id_corpus}, evaluate {eval_corpus}"


rule figure_delta_recall:
    """Δrecall heatmaps (target × evaluated class) per selector at the main set size, beside the random control."""
    input:
        lib=library("figure.py"),
        tables=study_tables("delta_recall"),
    output:
        pdf=f"{FIGURE_DIR}/delta_recall.pdf",
        png=report(f"{FIGURE_DIR}/delta_recall.png", caption="../report/delta_recall.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "1 Δrecall heatmaps", "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
    log:
        f"{FIGURE_LOG}/delta_recall.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_specificity:
    """Specificity of deactivation per selector and target emotion, selected set vs random control."""
    input:
        lib=library("figure.py"),
        tables=study_tables("delta_recall"),
        summaries=study_tables("summary"),
    output:
        pdf=f"{FIGURE_DIR}/specificity.pdf",
        png=report(f"{FIGURE_DIR}/specificity.png", caption="../report/specificity.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "2 specificity", "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
    log:
        f"{FIGURE_LOG}/specificity.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_strength:
    """Gain sweep: α vs share of predictions equal to the target, and vs accuracy."""
    input:
        lib=library("figure.py"),
        tables=study_tables("conditions"),
    output:
        pdf=f"{FIGURE_DIR}/strength.pdf",
        png=report(f"{FIGURE_DIR}/strength.png", caption="../report/strength.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "3 gain strength", "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
        alphas=PLAN.config["intervention"]["alphas"],
    log:
        f"{FIGURE_LOG}/strength.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_set_size:
    """Deactivation Δrecall(e,e) and specificity vs set size."""
    input:
        lib=library("figure.py"),
        tables=study_tables("delta_recall"),
    output:
        pdf=f"{FIGURE_DIR}/set_size.pdf",
        png=report(f"{FIGURE_DIR}/set_size.png", caption="../report/set_size.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "4 set size", "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
        fractions=PLAN.config["intervention"]["fractions"],
    log:
        f"{FIGURE_LOG}/set_size.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_layers:
    """ESN counts per layer per emotion per selector, beside the layer-knockout accuracy."""
    input:
        lib=library("figure.py"),
        counts=study_neuron_table("counts_per_layer"),
        knockout=knockout_table,
    output:
        pdf=f"{FIGURE_DIR}/layers.pdf",
        png=report(f"{FIGURE_DIR}/layers.png", caption="../report/layers.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "5 layers", "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
    log:
        f"{FIGURE_LOG}/layers.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_overlap:
    """Jaccard overlap of neuron sets between emotions and between selectors."""
    input:
        lib=library("figure.py"),
        emotions=study_neuron_table("overlap_emotions"),
        selectors=study_neuron_table("overlap_selectors"),
    output:
        pdf=f"{FIGURE_DIR}/overlap.pdf",
        png=report(f"{FIGURE_DIR}/overlap.png", caption="../report/overlap.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "6 overlap", "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
    log:
        f"{FIGURE_LOG}/overlap.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_id_size:
    """Identification-size sweep: specificity vs utterances per emotion, and set stability."""
    input:
        lib=library("figure.py"),
        full=study_tables("delta_recall"),
        stability=study_neuron_table("stability"),
    output:
        pdf=f"{FIGURE_DIR}/id_size.pdf",
        png=report(f"{FIGURE_DIR}/id_size.png", caption="../report/id_size.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "7 identification size", "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
        id_sizes=PLAN.config["selection"]["id_sizes"],
        id_seeds=PLAN.config["selection"]["id_seeds"],
    log:
        f"{FIGURE_LOG}/id_size.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_injection:
    """Label-free injection (2-Pass, Mix, Union) beside the oracle: change of UAR vs α per selector."""
    input:
        lib=library("figure.py"),
        tables=study_tables("injection"),
    output:
        pdf=f"{FIGURE_DIR}/injection.pdf",
        png=report(f"{FIGURE_DIR}/injection.png", caption="../report/injection.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "10 label-free injection", "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
    log:
        f"{FIGURE_LOG}/injection.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_correct_only:
    """Identification from all clips vs from correctly recognised clips only."""
    input:
        lib=library("figure.py"),
        summaries=study_tables("summary"),
        stability=study_neuron_table("stability"),
    output:
        pdf=f"{FIGURE_DIR}/correct_only.pdf",
        png=report(f"{FIGURE_DIR}/correct_only.png", caption="../report/correct_only.rst", category=FIGURE_CATEGORY,
                   subcategory=FIGURE_STUDY, labels={"figure": "11 correct-only identification",
                                                     "study": FIGURE_STUDY}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
    log:
        f"{FIGURE_LOG}/correct_only.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_transfer:
    """Cross-corpus transfer matrix of mean specificity, all studies of a model."""
    input:
        lib=library("figure.py"),
        tables=transfer_tables,
    output:
        pdf="results/figures/{model}/transfer.pdf",
        png=report("results/figures/{model}/transfer.png", caption="../report/transfer.rst", category=FIGURE_CATEGORY,
                   subcategory="across studies", labels={"figure": "8 cross-corpus transfer", "study": "all studies"}),
    params:
        selectors=SELECTORS,
        fraction=PLAN.config["intervention"]["fraction"],
        studies=transfer_keys,
    log:
        "logs/figures/{model}/transfer.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"


rule figure_confusion:
    """The model organism: held-out confusion matrix and layer-knockout accuracies from its training run."""
    input:
        lib=library("figure.py"),
        metrics=organism_metrics,
    output:
        pdf="results/figures/{model}/confusion.pdf",
        png=report("results/figures/{model}/confusion.png", caption="../report/confusion.rst",
                   category=FIGURE_CATEGORY, subcategory="model organism",
                   labels={"figure": "9 organism confusion", "study": "held-out split"}),
    params:
        organism=lambda wildcards: canonical(PLAN.config["organism"]),
    log:
        "logs/figures/{model}/confusion.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/figure.py"
