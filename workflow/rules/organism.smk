rule train_organism:
    """Train the model organism (a tiny real Qwen2.5-Omni thinker) on the identification splits of its corpora."""
    input:
        lib=library("train_organism.py"),
        manifests=[manifest(c) for c in PLAN.config["organism"]["corpora"]],
    output:
        weights="{organism_dir}/model.safetensors",
        metrics="{organism_dir}/metrics.json",
    params:
        organism=canonical(PLAN.config["organism"]),
        labels=lambda wc: PLAN.config["corpora"][PLAN.config["organism"]["corpora"][0]]["classes"],
        prompt=lambda wc: next(m["prompt"] for m in PLAN.config["models"].values() if m["organism"]),
        seed=organism_seed,
    threads: PLAN.config["organism"]["threads"]
    resources:
        gpu=0,
    log:
        "logs/train_organism/{organism_dir}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/train_organism.py"
