rule train_organism:
    """Train the model organism (a tiny real Qwen2.5-Omni thinker) on the identification splits of its corpora."""
    input:
        lib=LIB["organism"],
        manifests=[manifest(c) for c in config["organism"]["corpora"]],
    output:
        weights="{organism_dir}/model.safetensors",
        metrics="{organism_dir}/metrics.json",
    params:
        organism=canonical(config["organism"]),
        labels=lambda wc: config["corpora"][config["organism"]["corpora"][0]]["classes"],
        prompt=lambda wc: next(m["prompt"] for m in config["models"].values() if m["organism"]),
        seed=organism_seed,
    threads: config["organism"]["threads"]
    resources:
        gpu=0,
    log:
        "logs/train_organism/{organism_dir}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/train_organism.py"
