# The model organism: assembled from the shipped checkpoint (config organism.shipped, the default), or trained here.
from pathlib import Path

# A relative `shipped` path is the repository's (it ships with the workflow, like config/), whatever --directory.
SHIPPED = str(Path(workflow.basedir) / PLAN.config["organism"]["shipped"]) if PLAN.config["organism"]["shipped"] else None


def organism_recipe(organism_dir):
    from esn.shipped import recipe

    model = next(m for m in PLAN.models.values() if m["organism"] and m["path"] == organism_dir)
    return recipe(PLAN.config, PLAN.organism_seed(organism_dir), model["prompt"])


# Only the config's own organism is shipped; a population's organisms (other seeds) train their own.
ASSEMBLED = [m["path"] for m in PLAN.models.values() if m["organism"] and m["organism_seed"] is None] if SHIPPED else []
TRAINED = [m["path"] for m in PLAN.models.values() if m["organism"] and m["path"] not in ASSEMBLED]

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
            shipped=SHIPPED,
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
    resources:
        gpu=0,
    log:
        "logs/train_organism/{organism_dir}.log",
    conda:
        "../envs/esn.yaml"
    script:
        "../scripts/train_organism.py"
