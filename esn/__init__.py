"""Emotion-sensitive neurons (ESN) in large audio-language models.

The science of the workflow lives here; `workflow/scripts/` only translate the `snakemake`
object into calls of this package, so every stage can also run (and be tested) without Snakemake.
"""

__version__ = "0.1.0"
