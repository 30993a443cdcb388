"""Neuron sites: where a model's neurons are read and scaled, and which position groups exist there.

Torch-free, so that jobs that only read stores (selection) can ask without importing a model stack.
"""

from __future__ import annotations

#: In the decoder MLPs, the output of `act_fn` (the study's default, as LAPE) or the input of `down_proj`
#: (act_fn(gate)·up) — scaling either gives the same MLP output; or `audio_mlp`, the audio tower's MLPs (each
#: Whisper-style encoder layer's `activation_fn(fc1(x))`, fc2's input).
SITES = ("act_fn", "down_proj_input", "audio_mlp")
#: The sites inside the audio tower: they run once per clip and condition (not once per clip), and their
#: positions are the tower's valid frames, so the only position group is `audio`.
AUDIO_SITES = ("audio_mlp",)
DECODER_SITES = tuple(s for s in SITES if s not in AUDIO_SITES)


def site_groups(site: str, groups: list[str] | tuple[str, ...]) -> list[str]:
    """The position groups a capture at `site` records (and selection reads): all of `groups` in the decoder;
    in the audio tower only `audio` (its positions are audio frames: there is no prompt and no answer there)."""
    return list(groups) if site not in AUDIO_SITES else ["audio"]
