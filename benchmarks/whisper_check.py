"""The converted Whisper tiny.en against the CTranslate2 runtime, and its word error rate on espeak-ng speech.

    .venv/bin/python benchmarks/whisper_check.py                       # conversion time + WER (40 sentences)
    pip install --target /tmp/ct2 --no-deps ctranslate2==4.8.5          # optional, outside the project's env
    PYTHONPATH=/tmp/ct2 .venv/bin/python benchmarks/whisper_check.py   # + agreement with CTranslate2

Agreement: the encoder output of transformers' `WhisperForConditionalGeneration` (float32, converted
weights) vs `ctranslate2.models.Whisper(...).encode` (float32, the package's own file) on the same
log-mel features, and the greedy token sequences of both. CTranslate2 is not a dependency of the
project: it is the reference the conversion is checked against, run on purpose.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import device_info, write

from esn import whisper
from esn.corpora.spoken import SENTENCES
from esn.speech import speak


def main() -> None:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    result: dict = {"device": device_info(), "source_sha256": whisper.SOURCE_SHA256}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = whisper.convert(Path(tmp) / "tiny.en")
        result["convert_s"] = round(time.perf_counter() - t0, 2)
        model = WhisperForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
        waves = [speak(s) for s in SENTENCES]
        t0 = time.perf_counter()
        hypotheses = whisper.transcribe(model, out, waves)
        result["transcribe_s_per_clip"] = round((time.perf_counter() - t0) / len(waves), 3)
        result["sentences"] = len(SENTENCES)
        result["wer"] = round(whisper.word_error_rate(list(SENTENCES), hypotheses), 4)
        result["wer_first_12"] = round(whisper.word_error_rate(list(SENTENCES[:12]), hypotheses[:12]), 4)
        result["transcripts"] = hypotheses
        try:
            import ctranslate2
        except ImportError:
            result["ctranslate2"] = "not installed: agreement not measured"
        else:
            features = WhisperFeatureExtractor.from_pretrained(out)(waves[:8], sampling_rate=16_000,
                                                                    return_tensors="np").input_features
            reference = ctranslate2.models.Whisper(str(whisper.package_model_dir()), device="cpu",
                                                   compute_type="float32")
            ct2_out = np.array(reference.encode(ctranslate2.StorageView.from_array(features.astype(np.float32))))
            with torch.no_grad():
                hf_out = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
            prompt = [[50257, 50362]] * len(features)  # <|startoftranscript|><|notimestamps|>
            ct2_tokens = [r.sequences_ids[0] for r in reference.generate(
                ctranslate2.StorageView.from_array(features.astype(np.float32)), prompt, beam_size=1,
                max_length=64, suppress_blank=True)]
            with torch.no_grad():
                hf_tokens = model.generate(torch.from_numpy(features), max_new_tokens=64)
            hf_tokens = [[t for t in row.tolist() if t < 50256] for row in hf_tokens]
            result["ctranslate2"] = {
                "version": ctranslate2.__version__, "clips": len(features),
                "encoder_max_abs_diff": float(np.abs(ct2_out - hf_out).max()),
                "encoder_max_abs_value": float(np.abs(ct2_out).max()),
                "greedy_tokens_identical": sum(a == b for a, b in zip(ct2_tokens, hf_tokens)),
            }
    write("whisper_check", result)


if __name__ == "__main__":
    main()
