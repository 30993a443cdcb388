"""Generation-based answers: greedy decoding from the scored prefix, and parsing answers into labels.

Closed-set scoring (`AudioLMAdapter.label_logprobs`) reads one position; evaluation kits instead let
the model answer freely and parse the text. This module gives the second reading from the SAME
`Embedded` prefix (audio tower once, conditions as rows), so the two can be compared per utterance.

Decoding keeps all R rows for every step (finished rows are fed padding and ignored), so per-row
intervention hooks (`esn.hooks.scaled`: scale tensors [R, N] broadcast over positions) act on the
prefill and on every generated token exactly as on a scoring forward. The KV cache makes each new
token one decoder step over one position.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence

import torch
from transformers import DynamicCache

from esn.models.base import AudioLMAdapter, Embedded

#: Words that name a label in free answers (lower case, one word each); the label itself always counts.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutrality", "neutrally"),
    "happy": ("happiness", "joy", "joyful", "joyous", "glad", "cheerful", "happily", "delighted"),
    "sad": ("sadness", "sadly", "sorrow", "sorrowful", "unhappy", "upset"),
    "angry": ("anger", "angrily", "mad", "furious", "rage", "irritated", "annoyed"),
    "fear": ("fearful", "scared", "afraid", "frightened", "fright", "terrified", "anxious"),
    "disgust": ("disgusted", "disgusting", "disgustful", "revulsion"),
    "surprise": ("surprised", "surprising", "astonished", "amazed", "shocked"),
    "calm": ("calmness", "calmly", "relaxed", "peaceful"),
    "excited": ("excitement", "exciting", "enthusiastic"),
    "frustrated": ("frustration", "frustrating"),
    "contempt": ("contemptuous", "scornful", "scorn"),
}
UNPARSED = "other"


def _eos_ids(adapter: AudioLMAdapter) -> list[int]:
    """The ids that end an answer: the checkpoint's generation config, else the tokenizer's eos."""
    ids = getattr(getattr(adapter.model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    eos = getattr(adapter.tokenizer, "eos_token_id", None)
    return sorted(set(ids) | ({eos} if eos is not None else set()))


def _cache_kwarg(decoder: torch.nn.Module) -> str:
    """The decoder's name for the KV cache: `cache` in transformers >= 5.2x, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


@torch.no_grad()
def greedy_tokens(adapter: AudioLMAdapter, embedded: Embedded, *, max_new_tokens: int = 8,
                  eos_token_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Greedy new tokens [R, ≤ max_new_tokens] from the prefix, KV-cached, all R rows every step.

    After a row emits an end id it is fed its pad id (its later tokens are the pad id). Positions
    continue from the prefix's last one (+1 per step); for Qwen2.5-Omni's [3, R, T] multimodal RoPE
    all three components continue together, as the model's own `generate` does after text.
    """
    if adapter.family == "kimi_audio":
        raise NotImplementedError("Kimi-Audio answers through two token streams (kimia_infer's own generate); "
                                  "use closed-set scoring for it")
    eos = torch.tensor(list(_eos_ids(adapter) if eos_token_ids is None else eos_token_ids), device=adapter.device)
    pad = adapter.tokenizer.pad_token_id
    pad = int(eos[0]) if pad is None else int(pad)
    decoder, head, embed = adapter.decoder, adapter.model.get_output_embeddings(), adapter.model.get_input_embeddings()
    cache = {_cache_kwarg(decoder): DynamicCache()}
    mask, last = embedded.attention_mask, embedded.position_ids[..., -1:]
    hidden = decoder(inputs_embeds=embedded.inputs_embeds, attention_mask=mask, position_ids=embedded.position_ids,
                     use_cache=True, **cache).last_hidden_state
    rows = mask.shape[0]
    done = torch.zeros(rows, dtype=torch.bool, device=mask.device)
    out = []
    for step in range(1, max_new_tokens + 1):
        token = head(hidden[:, -1]).argmax(-1)
        token = torch.where(done, torch.full_like(token, pad), token)
        out.append(token)
        done |= torch.isin(token, eos)
        if step == max_new_tokens or bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
        hidden = decoder(inputs_embeds=embed(token[:, None]), attention_mask=mask, position_ids=last + step,
                         use_cache=True, **cache).last_hidden_state
    return torch.stack(out, dim=1)


def generate_answers(adapter: AudioLMAdapter, embedded: Embedded, *, max_new_tokens: int = 8) -> list[str]:
    """The greedy answer text of each row (special tokens and the end id dropped)."""
    tokens = greedy_tokens(adapter, embedded, max_new_tokens=max_new_tokens)
    eos = set(_eos_ids(adapter))
    texts = []
    for row in tokens.tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        texts.append(adapter.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts


def parse_answer(text: str, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None) -> str:
    """The first label a free answer names (case and punctuation ignored), else "other" (wrong).

    Words are matched whole ("sadness" names sad through its synonym, never by its prefix), so a
    label must be named, not merely contained; the first one named wins ("angry, not sad" → angry).
    """
    synonyms = SYNONYMS if synonyms is None else synonyms
    word_to_label = {}
    for label in labels:
        for word in (label, *synonyms.get(label, ())):
            word_to_label.setdefault(word.lower(), label)
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in word_to_label:
            return word_to_label[word]
    return UNPARSED
