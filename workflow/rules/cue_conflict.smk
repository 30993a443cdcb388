rule cue_conflict:
    """The model's unmodified answers on the cue-conflict corpus {corpus} (every clip, no selection, no store):
    per clip the label probabilities with both labels, and per (lexical, prosodic) cell the share of answers that
    follow the prosody, the words, or neither, with speaker-level intervals (esn/cue_conflict.py)."""
    input:
        lib=library("cue_conflict.py"),
        manifest=lambda wc: manifest(wc.corpus),
        model=model_files,
    output:
        answers="results/tables/cue_conflict/{model}/{corpus}.answers.parquet",
        summary="results/tables/cue_conflict/{model}/{corpus}.summary.csv",
    params:
        model=model_entry,
        device=PLAN.config["device"],
        seed=PLAN.config["seed"],
    threads: model_threads
    resources:
        gpu=model_gpu,
    log:
        "logs/cue_conflict/{model}/{corpus}.log",
    conda:
        model_env
    script:
        "../scripts/cue_conflict.py"
