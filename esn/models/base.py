"""The adapter protocol every model family implements, and the closed-set label scorer.

An adapter turns (waveforms, prompt) into the checkpoint's own inputs, and exposes what the neuron
study needs: the decoder layers, the MLP activation site, the audio-token positions, and the answer
logits. The forward pass is split in two so interventions can reuse the audio tower's output across
many conditions: `embed` (audio tower + text embeddings + positions, once per clip) and
`decode_last` (the decoder over those embeddings, logits at the answer position only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: Where a neuron's activation is read and modified: the output of `act_fn` (the study's default,
#: as LAPE) or the input of `down_proj` (act_fn(gate)·up). Scaling either gives the same MLP output.
SITES = ("act_fn", "down_proj_input")


@dataclass
class Batch:
    """A padded batch of model inputs (left padding: the last position is the answer position)."""

    inputs: dict[str, torch.Tensor]
    attention_mask: torch.Tensor   # [B, T] 1 on real tokens
    audio_mask: torch.Tensor       # [B, T] True on audio-token positions

    @property
    def size(self) -> int:
        return int(self.attention_mask.shape[0])

    def position_groups(self, names: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Float masks [G, B, T] for the position groups `audio`, `prompt` (other real tokens), `last`."""
        real = self.attention_mask.bool()
        groups = {"audio": self.audio_mask & real, "prompt": real & ~self.audio_mask,
                  "last": torch.zeros_like(real)}
        groups["last"][:, -1] = True
        unknown = set(names) - set(groups)
        if unknown:
            raise ValueError(f"unknown position group(s) {sorted(unknown)}; known: {sorted(groups)}")
        return torch.stack([groups[n] for n in names]).float()


@dataclass
class Embedded:
    """Decoder inputs after the audio tower: reusable across intervention conditions."""

    inputs_embeds: torch.Tensor    # [B, T, H]
    attention_mask: torch.Tensor   # [B, T]
    position_ids: torch.Tensor     # [B, T] or [3, B, T] (multimodal RoPE)

    def select(self, rows: torch.Tensor) -> "Embedded":
        """Rows `rows` of the batch (repeats allowed): one clip scored under many conditions."""
        pos = self.position_ids[:, rows] if self.position_ids.dim() == 3 else self.position_ids[rows]
        return Embedded(self.inputs_embeds[rows], self.attention_mask[rows], pos)


class LabelScorer:
    """Closed-set scoring from the answer-position logits, without generation.

    A label's score is the logsumexp of the log-probabilities of its variants' first tokens (bare and
    Capitalised, no leading space); the label probabilities are those scores renormalised over the
    labels. Labels whose first tokens collide cannot be told apart, so they are refused.
    """

    def __init__(self, tokenizer: Any, labels: list[str]):
        self.labels = list(labels)
        firsts: list[list[int]] = []
        owner: dict[int, str] = {}
        for label in self.labels:
            ids = sorted({tokenizer.encode(v, add_special_tokens=False)[0]
                          for v in (label, label.capitalize())})
            for i in ids:
                if i in owner:
                    raise ValueError(f"labels {owner[i]!r} and {label!r} share the first token {i} "
                                     f"({tokenizer.convert_ids_to_tokens(i)!r}); choose other label words")
                owner[i] = label
            firsts.append(ids)
        self.first_token_ids = firsts
        width = max(len(ids) for ids in firsts)
        index = torch.tensor([ids + [ids[0]] * (width - len(ids)) for ids in firsts])
        valid = torch.tensor([[True] * len(ids) + [False] * (width - len(ids)) for ids in firsts])
        self._index, self._valid = index, valid

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-label log-probabilities [R, n_labels] from answer-position logits [R, V]."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp[:, self._index.to(logits.device)]
        picked = picked.masked_fill(~self._valid.to(logits.device), float("-inf"))
        return torch.logsumexp(picked, dim=-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Label probabilities renormalised over the closed set [R, n_labels]."""
        return torch.softmax(self.scores(logits), dim=-1)


class AudioLMAdapter:
    """Shared machinery of the transformers-based families; subclasses build inputs and embeddings."""

    family: str = ""
    audio_token: str = ""

    def __init__(self, model: nn.Module, tokenizer: Any, labels: list[str], prompt: str,
                 *, site: str = "act_fn", source: str = "", revision: str | None = None):
        if site not in SITES:
            raise ValueError(f"unknown activation site {site!r}; choose one of {SITES}")
        self.model, self.tokenizer, self.prompt, self.site = model.eval(), tokenizer, prompt, site
        self.scorer = LabelScorer(tokenizer, labels)
        self.labels = self.scorer.labels
        self.source, self.revision = source, revision
        self.audio_token_id = tokenizer.convert_tokens_to_ids(self.audio_token)

    # --- what subclasses provide -------------------------------------------------------------
    def build_batch(self, waveforms: list[np.ndarray]) -> Batch:
        raise NotImplementedError

    def audio_embeddings(self, batch: Batch) -> torch.Tensor:
        """Audio-tower outputs for all audio tokens of the batch, flattened [N_audio, H]."""
        raise NotImplementedError

    def position_ids(self, batch: Batch) -> torch.Tensor:
        """RoPE positions that ignore left padding (so batched equals one-at-a-time)."""
        mask = batch.attention_mask.long()
        return (mask.cumsum(-1) - 1).clamp(min=0)

    # --- shared ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def decoder(self) -> nn.Module:
        return self.model.get_decoder()

    def decoder_layers(self) -> list[nn.Module]:
        return list(self.decoder.layers)

    @property
    def n_layers(self) -> int:
        return len(self.decoder_layers())

    @property
    def n_neurons(self) -> int:
        return int(self.decoder_layers()[0].mlp.down_proj.in_features)

    def site_modules(self) -> list[tuple[nn.Module, str]]:
        """(module, 'output' | 'input') per decoder layer: where hooks read and write neurons."""
        if self.site == "act_fn":
            return [(layer.mlp.act_fn, "output") for layer in self.decoder_layers()]
        return [(layer.mlp.down_proj, "input") for layer in self.decoder_layers()]

    def embed(self, batch: Batch) -> Embedded:
        """Text embeddings with the audio tower's outputs scattered into the audio-token positions."""
        ids = batch.inputs["input_ids"]
        embeds = self.model.get_input_embeddings()(ids)
        if batch.audio_mask.any():
            audio = self.audio_embeddings(batch).to(embeds.dtype)
            embeds = embeds.masked_scatter(batch.audio_mask.unsqueeze(-1).expand_as(embeds), audio)
        return Embedded(embeds, batch.attention_mask, self.position_ids(batch))

    def decode_last(self, embedded: Embedded) -> torch.Tensor:
        """Answer-position logits [R, V]; the vocabulary projection runs on the last position only."""
        hidden = self.decoder(inputs_embeds=embedded.inputs_embeds, attention_mask=embedded.attention_mask,
                              position_ids=embedded.position_ids, use_cache=False).last_hidden_state
        return self.model.get_output_embeddings()(hidden[:, -1])

    def to_device(self, batch: Batch) -> Batch:
        dev = self.device
        return Batch({k: v.to(dev) for k, v in batch.inputs.items()}, batch.attention_mask.to(dev),
                     batch.audio_mask.to(dev))

    def label_logprobs(self, embedded: Embedded) -> torch.Tensor:
        """The answer step: log-probabilities of the labels [R, n_labels], renormalised over the closed set.

        The one interface every caller scores through (capture, interventions, knockout, injection, the
        organism's training and evaluation): hooks active around this call act on every position it runs.
        """
        return torch.log_softmax(self.scorer.scores(self.decode_last(embedded)), dim=-1)

    def label_probabilities(self, embedded: Embedded) -> torch.Tensor:
        """Label probabilities [R, n_labels] (see `label_logprobs`)."""
        return self.label_logprobs(embedded).exp()

    @torch.no_grad()
    def score(self, waveforms: list[np.ndarray]) -> torch.Tensor:
        """Label probabilities [B, n_labels] of the unmodified model."""
        batch = self.to_device(self.build_batch(waveforms))
        return self.label_probabilities(self.embed(batch))

    def provenance(self) -> dict[str, str]:
        """What a store records about the model, so results of different models never mix."""
        return {"model_family": self.family, "model_source": str(self.source),
                "model_revision": str(self.revision or ""), "model_class": type(self.model).__name__,
                "site": self.site, "labels": ",".join(self.labels), "prompt": self.prompt,
                "n_layers": str(self.n_layers), "n_neurons": str(self.n_neurons),
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", "")}
