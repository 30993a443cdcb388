"""The adapter protocol every model family implements, and the closed-set label scorer.

An adapter turns (waveforms, prompt) into the checkpoint's own inputs, and exposes what the neuron
study needs: the decoder layers, the MLP activation site, the audio-token positions, and the answer
logits. The forward pass is split in two so interventions can reuse the audio tower's output across
many conditions: `embed` (audio tower + text embeddings + positions, once per clip) and
`decode_last` (the decoder over those embeddings, logits at the answer position only). Labels are
scored by `label_logprobs` — from `decode_last` alone when every label is one token, else by whole-label
scoring over a KV cache of the prefix (`decode_labels`; see `LabelScorer`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from esn.sites import AUDIO_SITES, DECODER_SITES, SITES
from esn.workflow import COMMIT_HASH


def require_pinned_revision(path: str, revision: str | None) -> str:
    """The revision of a checkpoint whose remote code will run, refused unless it is a full commit hash:
    a branch or tag can move after review, so the code that runs would not be the code that was read."""
    if not isinstance(revision, str) or not COMMIT_HASH.fullmatch(revision):
        raise ValueError(f"model {path}: trust_remote_code needs a pinned revision: set the models entry's `revision` "
                         f"to the 40-hex commit hash of the checkpoint you reviewed, not {revision!r} (a branch or tag "
                         f"can move; see config/paper.yaml for how to find the commit)")
    return revision


#: Submodules of the audio path the study reads, by attribute name, wherever they sit in the model
#: (`audio_tower`, the multimodal projector; Kimi-Audio's whisper-feature adaptor).
AUDIO_PARTS = ("audio_tower", "multi_modal_projector", "vq_adaptor")


def study_weight_prefixes(model: nn.Module) -> dict[str, str]:
    """Qualified-name prefix -> role of every part whose weights the study reads: the decoder (its
    embeddings and MLP neurons), the output head, and the audio tower and projector."""
    names = {id(m): n for n, m in model.named_modules()}
    parts = {"decoder": model.get_decoder(), "lm_head": model.get_output_embeddings(),
             "embeddings": model.get_input_embeddings()}
    prefixes = {names[id(m)] + ".": role for role, m in parts.items() if m is not None and id(m) in names}
    for name, _ in model.named_modules():
        if name.rsplit(".", 1)[-1] in AUDIO_PARTS:
            prefixes[name + "."] = name.rsplit(".", 1)[-1]
    return prefixes


def check_loaded_weights(model: nn.Module, loading_info: dict[str, Any], source: str) -> None:
    """Refuse a load that left weights of the studied parts random or put checkpoint weights nowhere.

    transformers reports missing weights (initialised at random) and unexpected ones (left unused) but
    only prints them; a study on a model whose decoder or audio tower is random would run to the end
    and mean nothing. Parts the study never runs (a vision tower, a speech-output talker) may differ.
    """
    prefixes = study_weight_prefixes(model)

    def studied(keys: Any) -> list[str]:
        keys = [k[0] if isinstance(k, tuple) else k for k in keys or []]
        return sorted(k for k in keys if any(k.startswith(p) for p in prefixes))

    problems = {kind: studied(loading_info.get(f"{kind}_keys")) for kind in ("missing", "unexpected", "mismatched")}
    if any(problems.values()):
        def listing(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
        found = "; ".join(f"{len(keys)} {kind}: {listing(keys)}" for kind, keys in problems.items() if keys)
        parts = ", ".join(sorted(set(prefixes.values())))
        raise ValueError(f"checkpoint {source}: weights of the parts the study reads ({parts}) do not match "
                         f"{type(model).__name__} ({found}). Loading it would run the study on randomly initialised "
                         f"weights; check that the checkpoint's layout (weight-name prefixes) and the transformers "
                         f"version are ones this adapter supports (README, 'Loading real checkpoints')")


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

    def select(self, rows: torch.Tensor) -> "Batch":
        """Rows `rows` of the batch (repeats allowed): one clip through the audio tower under many conditions.
        Every input is row-first (one row per clip)."""
        return Batch({k: v[rows] for k, v in self.inputs.items()}, self.attention_mask[rows], self.audio_mask[rows])


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


#: How a label is scored (config key `models.<m>.scoring`): `full_label` teacher-forces each label's whole
#: token sequence; `first_token` reads only its first token at the answer position (cheaper, biased by
#: real vocabularies where a label's first token is a fragment such as 'f' or 'C').
SCORING_MODES = ("full_label", "first_token")
#: The scoring when none is asked for (the config schema's default says the same; a test holds them equal).
DEFAULT_SCORING = SCORING_MODES[0]

#: The end-of-answer token appended to every continuation when one label's token sequence is a prefix
#: of another label's (see `LabelScorer`); the Qwen chat end token, else the tokenizer's eos.
END_OF_ANSWER = "<|im_end|>"


def _surface_forms(label: str, synonyms: list[str]) -> list[str]:
    """A label's surface variants, in order without repeats: bare, Capitalised, then each synonym likewise."""
    forms: list[str] = []
    for word in [label, *synonyms]:
        for form in (word, word.capitalize()):
            if form not in forms:
                forms.append(form)
    return forms


def _is_proper_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) < len(b) and b[:len(a)] == a


class LabelScorer:
    """Closed-set label scoring at the answer position, without generation.

    Each label has surface variants: bare, Capitalised (no leading space) and any configured synonyms.

    - `first_token`: a label's score is the logsumexp of the log-probabilities of its variants' first
      tokens. Exact when every label is one token; otherwise biased, as a fragment like 'f' or 'C'
      starts thousands of words. Labels sharing a first token are refused.
    - `full_label` (default): a variant's score is the log-probability of its whole token sequence after
      the answer prefix (teacher-forced), i.e. of the event "the answer starts with this variant";
      a label's score is the logsumexp over its variants (a variant that extends another variant of
      the same label is dropped: its event is contained in the shorter one's). Events of different
      labels are disjoint as long as no label's sequence is a token-prefix of another label's, so the
      renormalised scores are the probability of each label given that the answer is one of them.
      If some label's sequence IS a prefix of another's ('sad' / 'sadness'), the shorter event would
      contain the longer one; then the end-of-answer token (`<|im_end|>`, else eos) is appended to
      EVERY variant, scoring "the answer is exactly this variant", which makes all events disjoint
      again; the relations are reported in `prefix_relations` and the provenance. Identical sequences
      across labels cannot be told apart and are refused. When every variant is one token (and no end
      token is needed) `full_label` is exactly `first_token` and runs in one pass (`one_pass`).

    The label probabilities are the scores renormalised over the labels.
    """

    def __init__(self, tokenizer: Any, labels: list[str], *, mode: str = DEFAULT_SCORING,
                 synonyms: dict[str, list[str]] | None = None):
        if mode not in SCORING_MODES:
            raise ValueError(f"unknown scoring {mode!r}; choose one of {SCORING_MODES}")
        synonyms = dict(synonyms or {})
        unknown = set(synonyms) - set(labels)
        if unknown:
            raise ValueError(f"synonyms given for {sorted(unknown)}, which are not labels ({labels})")
        self.labels, self.mode, self.tokenizer = list(labels), mode, tokenizer
        self.forms = {l: _surface_forms(l, list(synonyms.get(l, []))) for l in self.labels}
        self.sequences: dict[str, list[tuple[int, ...]]] = {
            l: [tuple(tokenizer.encode(f, add_special_tokens=False)) for f in forms] for l, forms in self.forms.items()}
        self.first_token_ids = [sorted({s[0] for s in seqs}) for seqs in self.sequences.values()]
        self.prefix_relations: list[str] = []
        self.end_token_id: int | None = None
        if mode == "first_token":
            self._check_first_tokens()
            variants = [(i, (t,)) for i, ids in enumerate(self.first_token_ids) for t in ids]
        else:
            variants = self._full_label_variants()
        self.variants = variants
        self.one_pass = all(len(s) == 1 for _, s in variants)
        self._build(variants)

    # --- construction ----------------------------------------------------------------------------
    def render(self, ids: tuple[int, ...] | list[int]) -> str:
        """Token ids as their token strings, for messages and tables."""
        return "+".join(repr(self.tokenizer.convert_ids_to_tokens(int(i))) for i in ids)

    def _check_first_tokens(self) -> None:
        owner: dict[int, str] = {}
        for label, ids in zip(self.labels, self.first_token_ids):
            for i in ids:
                if i in owner:
                    raise ValueError(f"labels {owner[i]!r} and {label!r} share the first token {i} "
                                     f"({self.render([i])}); choose other label words or scoring: full_label")
                owner[i] = label

    def _full_label_variants(self) -> list[tuple[int, tuple[int, ...]]]:
        owner: dict[tuple[int, ...], str] = {}
        for label, seqs in self.sequences.items():
            for s in seqs:
                if owner.get(s, label) != label:
                    raise ValueError(f"labels {owner[s]!r} and {label!r} have the same token sequence {self.render(s)}: "
                                     f"they cannot be told apart; choose other label words")
                owner[s] = label
        for a, la in owner.items():
            for b, lb in owner.items():
                if la != lb and _is_proper_prefix(a, b):
                    self.prefix_relations.append(f"{la!r} {self.render(a)} is a prefix of {lb!r} {self.render(b)}")
        if self.prefix_relations:
            end = self.tokenizer.convert_tokens_to_ids(END_OF_ANSWER)
            if end is None or end == getattr(self.tokenizer, "unk_token_id", None):
                end = getattr(self.tokenizer, "eos_token_id", None)
            if end is None:
                raise ValueError(f"label token prefixes ({'; '.join(self.prefix_relations)}) need an end-of-answer "
                                 f"token, and the tokenizer has neither {END_OF_ANSWER} nor an eos token")
            self.end_token_id = int(end)
        variants = []
        for i, seqs in enumerate(self.sequences.values()):
            unique = list(dict.fromkeys(seqs))
            if self.end_token_id is None:  # 'starts with' events: a longer variant is inside a shorter one
                unique = [s for s in unique if not any(_is_proper_prefix(o, s) for o in unique)]
            variants += [(i, s + ((self.end_token_id,) if self.end_token_id is not None else ())) for s in unique]
        return variants

    def _build(self, variants: list[tuple[int, tuple[int, ...]]]) -> None:
        """Index tensors: first tokens per variant, and the packed continuation (every variant's tokens
        but its last, one segment per variant) with each position's target token and variant."""
        n_labels = len(self.labels)
        self._first = torch.tensor([s[0] for _, s in variants])
        self._label_of = torch.zeros(n_labels, len(variants), dtype=torch.bool)
        for v, (i, _) in enumerate(variants):
            self._label_of[i, v] = True
        ids, targets, offsets, owner = [], [], [], []
        for v, (_, s) in enumerate(variants):
            ids += s[:-1]
            targets += s[1:]
            offsets += range(len(s) - 1)
            owner += [v] * (len(s) - 1)
        self.continuation_ids = torch.tensor(ids, dtype=torch.long)
        self.continuation_offsets = torch.tensor(offsets, dtype=torch.long)
        self._targets = torch.tensor(targets, dtype=torch.long)
        owner_t = torch.tensor(owner, dtype=torch.long)
        self._position_variant = torch.zeros(len(ids), len(variants))
        self._position_variant[torch.arange(len(ids)), owner_t] = 1.0
        #: [L, L] which continuation positions each may attend to: its own variant's, causally
        self.continuation_block = (owner_t[:, None] == owner_t[None, :]) & (
            torch.arange(len(ids))[:, None] >= torch.arange(len(ids))[None, :])
        self._copies: dict[tuple[str, str], torch.Tensor] = {}

    def on(self, name: str, device: torch.device | str) -> torch.Tensor:
        """The index tensor `name` on `device`, copied there once (not host-to-device on every scoring call)."""
        key = (name, str(device))
        if key not in self._copies:
            self._copies[key] = getattr(self, name).to(device)
        return self._copies[key]

    # --- scoring ---------------------------------------------------------------------------------
    def _combine(self, variant_scores: torch.Tensor) -> torch.Tensor:
        """Per-label logsumexp over the label's variants: [R, n_variants] -> [R, n_labels]."""
        mask = self.on("_label_of", variant_scores.device)
        expanded = variant_scores[:, None, :].masked_fill(~mask[None], float("-inf"))
        return torch.logsumexp(expanded, dim=-1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """One-pass label scores [R, n_labels] from answer-position logits [R, V] (every variant one token)."""
        if not self.one_pass:
            raise ValueError(f"{self.mode} scoring of multi-token labels needs the continuation pass "
                             f"(AudioLMAdapter.label_logprobs), not the answer-position logits alone")
        logp = torch.log_softmax(logits.float(), dim=-1)
        return self._combine(logp[:, self.on("_first", logits.device)])

    def sequence_scores(self, logits: torch.Tensor, continuation_logp: torch.Tensor) -> torch.Tensor:
        """Whole-label scores [R, n_labels] from answer-position logits [R, V] and the log-probabilities
        of the continuation targets [R, L] (`continuation_targets`)."""
        first = torch.log_softmax(logits.float(), dim=-1)[:, self.on("_first", logits.device)]
        rest = continuation_logp.float() @ self.on("_position_variant", logits.device)
        return self._combine(first + rest)

    def continuation_targets(self, device: torch.device | str) -> torch.Tensor:
        """The token each continuation position must predict [L]."""
        return self.on("_targets", device)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Label probabilities renormalised over the closed set [R, n_labels] (one-pass scoring)."""
        return torch.softmax(self.scores(logits), dim=-1)

    def describe(self) -> dict[str, str]:
        """What a store or table records about the scoring."""
        return {"scoring": self.mode,
                "scoring_end_token": "" if self.end_token_id is None else self.render([self.end_token_id]),
                "scoring_variants": "; ".join(f"{self.labels[i]}={self.render(s)}" for i, s in self.variants)}


class AudioLMAdapter:
    """Shared machinery of the transformers-based families; subclasses build inputs and embeddings."""

    family: str = ""
    audio_token: str = ""
    #: whether `audio_site_rows` is implemented (a Whisper-style audio tower whose frames map to clips)
    audio_site: bool = False

    def __init__(self, model: nn.Module, tokenizer: Any, labels: list[str], prompt: str,
                 *, site: str = "act_fn", source: str = "", revision: str | None = None,
                 scoring: str = DEFAULT_SCORING, synonyms: dict[str, list[str]] | None = None):
        if site not in SITES:
            raise ValueError(f"unknown activation site {site!r}; choose one of {SITES}")
        if site in AUDIO_SITES and not self.audio_site:
            raise ValueError(f"site {site!r} (the audio tower's MLPs) is not supported by the {self.family or type(self).__name__} "
                             f"adapter; choose one of {list(DECODER_SITES)}")
        self.model, self.tokenizer, self.prompt, self.site = model.eval(), tokenizer, prompt, site
        self.scorer = LabelScorer(tokenizer, labels, mode=scoring, synonyms=synonyms)
        self.labels = self.scorer.labels
        self.source, self.revision = source, revision
        self.audio_token_id = tokenizer.convert_tokens_to_ids(self.audio_token)

    # --- what subclasses provide -------------------------------------------------------------
    def build_batch(self, waveforms: list[np.ndarray]) -> Batch:
        raise NotImplementedError

    def audio_embeddings(self, batch: Batch) -> torch.Tensor:
        """Audio-tower outputs for all audio tokens of the batch, flattened [N_audio, H]."""
        raise NotImplementedError

    def audio_site_rows(self, batch: Batch) -> torch.Tensor:
        """For the audio tower's MLP activations of `batch` flattened to [P, N]: the batch row each position belongs
        to, -1 on padding frames [P] (long). What capture reduces over and what per-row scales are expanded by."""
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
    def in_audio_tower(self) -> bool:
        """Whether the neuron site is in the audio tower (then the tower runs once per condition)."""
        return self.site in AUDIO_SITES

    def audio_tower_layers(self) -> list[nn.Module]:
        """The audio tower's encoder layers (Whisper-style: `fc1`, `activation_fn`, `fc2`)."""
        towers = [m for name, m in self.model.named_modules() if name.rsplit(".", 1)[-1] == "audio_tower"]
        if len(towers) != 1:
            raise ValueError(f"{type(self.model).__name__}: expected one `audio_tower` module, found {len(towers)}")
        return list(towers[0].layers)

    def site_layers(self) -> list[nn.Module]:
        """The layers holding the site's neurons: the decoder's, or the audio tower's for `audio_mlp`."""
        return self.audio_tower_layers() if self.in_audio_tower else self.decoder_layers()

    @property
    def n_layers(self) -> int:
        return len(self.site_layers())

    @property
    def n_neurons(self) -> int:
        if self.in_audio_tower:
            return int(self.audio_tower_layers()[0].fc1.out_features)
        return int(self.decoder_layers()[0].mlp.down_proj.in_features)

    def site_modules(self) -> list[tuple[nn.Module, str]]:
        """(module, 'output' | 'input') per layer of the site: where hooks read and write neurons."""
        if self.site == "audio_mlp":  # each encoder layer owns its activation module (ACT2FN builds one per layer)
            return [(layer.activation_fn, "output") for layer in self.audio_tower_layers()]
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

    def decode_labels(self, embedded: Embedded) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-label scoring in two decoder passes over the same R rows.

        Pass 1 runs the prefix (prompt + audio) once and keeps its KV cache; its last position gives the
        answer-position logits [R, V]. Pass 2 runs the scorer's packed continuation — every variant's
        tokens but its last, one segment per variant, the same for every row — over that cache: a 4-D
        additive mask lets each segment see the row's real prefix positions (left padding stays hidden)
        and its own earlier tokens only, and its positions continue from the row's last position + 1
        (per RoPE axis for multimodal [3, R, T] positions). So each segment is scored exactly as if it
        followed the prompt alone, all segments in one forward, and hooks around the call (per-row
        scales [R, N]) act on both passes with the same R rows. Returns the answer-position logits and
        the log-probabilities of each continuation position's target token [R, L].
        """
        from transformers import DynamicCache

        scorer, decoder = self.scorer, self.decoder
        embeds, prefix_mask = embedded.inputs_embeds, embedded.attention_mask
        R, T = prefix_mask.shape
        dev, dtype = embeds.device, embeds.dtype
        cache = DynamicCache(config=decoder.config)
        cache_kw = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
        hidden = decoder(inputs_embeds=embeds, attention_mask=prefix_mask, position_ids=embedded.position_ids,
                         use_cache=True, **{cache_kw: cache}).last_hidden_state
        head = self.model.get_output_embeddings()
        logits = head(hidden[:, -1])

        ids = scorer.on("continuation_ids", dev)
        L = len(ids)
        cont = self.model.get_input_embeddings()(ids)[None].expand(R, L, -1)
        positions = embedded.position_ids[..., -1:] + 1 + scorer.on("continuation_offsets", dev)
        allowed = torch.cat([prefix_mask.bool()[:, None, :].expand(R, L, T),
                             scorer.on("continuation_block", dev)[None].expand(R, L, L)], dim=-1)
        mask = torch.zeros(R, 1, L, T + L, dtype=dtype, device=dev).masked_fill(
            ~allowed[:, None], torch.finfo(dtype).min)
        hidden = decoder(inputs_embeds=cont, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{cache_kw: cache}).last_hidden_state
        targets = scorer.continuation_targets(dev)
        picked = []
        for i in range(0, L, 8):  # vocabulary projection a few positions at a time: [R, 8, V] at most
            logp = torch.log_softmax(head(hidden[:, i:i + 8]).float(), dim=-1)
            picked.append(logp.gather(-1, targets[i:i + 8][None, :, None].expand(R, -1, 1))[..., 0])
        return logits, torch.cat(picked, dim=1)

    def label_logprobs(self, embedded: Embedded) -> torch.Tensor:
        """The answer step: log-probabilities of the labels [R, n_labels], renormalised over the closed set.

        The one interface every caller scores through (capture, interventions, knockout, injection, the
        organism's training and evaluation): hooks active around this call act on every position it runs
        — with multi-token labels that is the prefix pass and then the continuation pass
        (`decode_labels`), both with the same R rows; with one-token labels it is one `decode_last`.
        """
        if self.scorer.one_pass:
            return torch.log_softmax(self.scorer.scores(self.decode_last(embedded)), dim=-1)
        return torch.log_softmax(self.scorer.sequence_scores(*self.decode_labels(embedded)), dim=-1)

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
                "site": self.site, "labels": ",".join(self.labels), "prompt": self.prompt, **self.scorer.describe(),
                "n_layers": str(self.n_layers), "n_neurons": str(self.n_neurons),
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", "")}
