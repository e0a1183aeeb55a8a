"""The real whisper-tiny.en on a few EmoDB clips agrees with a plain per-utterance transformers loop."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers

from probekit.extract.encoders import EncoderSpec, load_encoder

pytestmark = pytest.mark.slow


def _clips(manifest, count=6):
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    # Spread over the corpus so lengths and speakers differ.
    picked = rows[:: len(rows) // count][:count]
    waves = []
    for row in picked:
        wave, rate = sf.read(manifest.parent / row["path"], dtype="float32")
        assert rate == 16000 and wave.ndim == 1
        waves.append(wave)
    return waves


def _reference(model_dir, waves):
    """One utterance at a time: 30 s log-mel window, encoder hidden states, mean of ceil(n/320) frames."""
    fe = transformers.WhisperFeatureExtractor.from_pretrained(model_dir)
    encoder = transformers.WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).get_encoder().eval()
    out = []
    with torch.no_grad():
        for wave in waves:
            feats = fe(wave, sampling_rate=16000, return_tensors="pt").input_features
            hidden = encoder(feats, output_hidden_states=True).hidden_states
            n = math.ceil(len(wave) / 320)
            out.append(np.stack([h[0, :n].mean(0).numpy() for h in hidden]))
    return np.stack(out)


def _cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_whisper_tiny_matches_plain_loop(whisper_tiny, emodb_manifest):
    waves = _clips(emodb_manifest)
    encoder = load_encoder(EncoderSpec(str(whisper_tiny), device="cpu"))
    assert (encoder.num_hidden_states, encoder.hidden_size) == (5, 384)
    ours = encoder.encode(waves, "mean")
    assert ours.shape == (len(waves), 5, 384)
    cos = _cosine(ours, _reference(whisper_tiny, waves))
    assert cos.min() >= 0.9999, cos
