rule train_organism:
    """Train the model organism (a tiny real Qwen2.5-Omni thinker) on the identification split."""
    input:
        lib=LIB["organism"],
        manifest=manifest(config["organism"]["corpus"]),
    output:
        weights="{organism_dir}/model.safetensors",
        metrics="{organism_dir}/metrics.json",
    params:
        organism=canonical(config["organism"]),
        labels=lambda wc: config["corpora"][config["organism"]["corpus"]]["classes"],
        prompt=lambda wc: next(m["prompt"] for m in config["models"].values() if m["organism"]),
        seed=config["seed"],
    threads: 2
    resources:
        gpu=0,
    log:
        "logs/train_organism/{organism_dir}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/train_organism.py"
