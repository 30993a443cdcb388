# The model organism: assembled from the shipped checkpoint (config organism.shipped, the default), or trained here.
if SHIPPED:

    rule assemble_organism:
        """The shipped organism (resources/organism: what was trained here, with its sha256 hashes) with Whisper's
        encoder rebuilt from the installed package; refuses a changed file, another encoder or another recipe."""
        input:
            lib=library("assemble_organism.py"),
            record=f"{SHIPPED}/SHIPPED.json",
            trained=f"{SHIPPED}/trained.safetensors",
        output:
            weights="{organism_dir}/model.safetensors",
            metrics="{organism_dir}/metrics.json",
        wildcard_constraints:
            organism_dir="|".join(re.escape(p) for p in ASSEMBLED) or "$^",
        params:
            recipe=lambda wc: organism_recipe(wc.organism_dir),
        resources:
            gpu=0,
        log:
            "logs/assemble_organism/{organism_dir}.log",
        conda:
            "../envs/esn.yaml"
        script:
            "../scripts/assemble_organism.py"


rule train_organism:
    """Train the model organism (a tiny real Qwen2.5-Omni thinker) on the identification splits of its corpora."""
    input:
        lib=library("train_organism.py"),
        manifests=[manifest(c) for c in PLAN.config["organism"]["corpora"]],
    output:
        weights="{organism_dir}/model.safetensors",
        metrics="{organism_dir}/metrics.json",
    wildcard_constraints:
        organism_dir="|".join(re.escape(p) for p in TRAINED) or "$^",
    params:
        organism=canonical(PLAN.config["organism"]),
        labels=lambda wc: PLAN.config["corpora"][PLAN.config["organism"]["corpora"][0]]["classes"],
        prompt=lambda wc: next(m["prompt"] for m in PLAN.config["models"].values() if m["organism"]),
        seed=organism_seed,
        recipe=lambda wc: organism_recipe(wc.organism_dir),
    threads: PLAN.config["organism"]["threads"]
    priority: 40   # a population's longest chains start here: every organism trains before interventions take the cores
    resources:
        gpu=0,
    log:
        "logs/train_organism/{organism_dir}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/train_organism.py"
