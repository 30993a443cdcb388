from esn.corpora import GENERATED_READERS
from esn.prepare import PrepareOptions, prepare_corpus
from esn.workflow import setup_logging

setup_logging(snakemake.log[0])
spec = snakemake.params.corpus
prepare_corpus(
    snakemake.wildcards.corpus, spec["reader"], spec["path"], snakemake.output.manifest.rsplit("/", 1)[0],
    PrepareOptions(classes=spec["classes"], max_duration_s=spec["max_duration_s"],
                   evaluation_fraction=spec["evaluation_fraction"], seed=snakemake.params.seed, split=spec["split"],
                   reader_options={**({"seed": snakemake.params.seed} if spec["reader"] in GENERATED_READERS else {}),
                                   **spec["options"]}),
)
