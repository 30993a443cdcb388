rule prepare_corpus:
    """Decode, check, resample to 16 kHz mono; manifest + quarantine + reconciled counts."""
    input:
        lib=LIB["prepare"],
        reader=corpus_reader_module,
    output:
        manifest="resources/corpora/{corpus}/manifest.parquet",
        quarantine="resources/corpora/{corpus}/quarantine.csv",
        summary="resources/corpora/{corpus}/summary.json",
    params:
        corpus=lambda wc: canonical(config["corpora"][wc.corpus]),
        seed=config["seed"],
    log:
        "logs/prepare_corpus/{corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/prepare_corpus.py"
