"""Corpus readers, one module per corpus, imported on first use by `get_reader(name)`."""

from esn.corpora.base import READERS, Candidate, get_reader  # noqa: F401

#: Reader name -> module that registers it (imported lazily: the hub reader pulls in `datasets`).
BUILTIN_READERS: dict[str, str] = {
    name: f"esn.corpora.{name}"
    for name in ("synthetic", "spoken", "ravdess", "cremad", "tess", "savee", "iemocap", "meld", "msp_podcast",
                 "esd", "audiofolder", "hub")
}

#: Readers that generate their corpus: the workflow passes them its seed.
GENERATED_READERS: frozenset[str] = frozenset({"synthetic", "spoken"})

#: Readers that know their corpus' published split (`split: official`; see each module's `official_split`).
OFFICIAL_SPLIT_READERS: frozenset[str] = frozenset({"iemocap", "meld", "msp_podcast", "esd"})
