rule prepare_corpus:
    """Decode, check, resample to 16 kHz mono; manifest + quarantine + reconciled counts."""
    input:
        lib=library("prepare_corpus.py"),
    output:
        manifest="resources/corpora/{corpus}/manifest.parquet",
        quarantine="resources/corpora/{corpus}/quarantine.csv",
        summary="resources/corpora/{corpus}/summary.json",
    params:
        corpus=lambda wc: canonical(PLAN.config["corpora"][wc.corpus]),
        seed=PLAN.config["seed"],
    log:
        "logs/prepare_corpus/{corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/prepare_corpus.py"
