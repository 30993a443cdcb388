rule capture:
    """One shard of a corpus through a model: per-utterance neuron statistics into a resumable Zarr store."""
    input:
        lib=library("capture.py"),
        manifest=lambda wc: manifest(wc.corpus),
        model=model_files,
    output:
        temp(directory("results/activations/{model}/{corpus}.shards/{shard}-of-{n}.zarr")),
    params:
        model=model_entry,
        capture=canonical(PLAN.config["capture"]),
        device=PLAN.config["device"],
        config_hash=lambda wc: PLAN.config_hash(wc.model, wc.corpus),
    threads: model_threads
    priority: 30   # the critical chain (capture -> select -> intervene) first; figures fill the gaps
    resources:
        gpu=model_gpu,
    log:
        "logs/capture/{model}/{corpus}/{shard}-of-{n}.log",
    conda:
        model_env
    script:
        "../scripts/capture.py"


rule merge_shards:
    """The shards of a corpus as one store (one logical Dataset for the selectors)."""
    input:
        lib=library("merge_shards.py"),
        shards=shard_stores,
    output:
        directory("results/activations/{model}/{corpus}.zarr"),
    priority: 30
    log:
        "logs/merge_shards/{model}/{corpus}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/merge_shards.py"
