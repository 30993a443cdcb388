# Emotion-sensitive neurons in large audio-language models: capture -> select -> intervene -> figures.
# Run: snakemake --cores 2   (config/config.yaml: synthetic corpus + model organism, CPU, minutes)
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless a config is given: `--configfile X` is then the whole config (missing keys
# take the schema's defaults), not a patch over the default's corpora and organism.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/organism.smk"
include: "workflow/rules/capture.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/intervene.smk"
include: "workflow/rules/lens.smk"
include: "workflow/rules/steer.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/browser.smk"
include: "workflow/rules/population.smk"
include: "workflow/rules/cue_conflict.smk"


rule all:
    input:
        PLAN.targets(),
    default_target: True
