"""Shared helpers for the predict tests: a tiny deterministic stand-in encoder and synthetic audio.

The stand-in follows the encoder contract (``sample_rate``, ``num_hidden_states``, ``min_samples``,
``identity``, ``encode(waves, pooling)``) so scoring and timelines can be tested without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

RATE = 16000


class SpectralEncoder:
    """Three 'hidden states' of 8 band energies (log), mean-pooled over 25 ms frames.

    Layers 0 and 2 are noise; layer 1 holds the band energies, so only layer 1 separates the tones.
    """

    sample_rate = RATE
    num_hidden_states = 3
    hidden_size = 8
    min_samples = 400
    pads_safely = True
    identity = {"model": "spectral-test", "commit": "", "config_hash": ""}

    def __init__(self):
        self.calls = 0
        self.max_batch_samples = 0

    def encode(self, waves, pooling="mean"):
        self.calls += 1
        self.max_batch_samples = max(self.max_batch_samples, sum(len(w) for w in waves))
        out = np.zeros((len(waves), 3, 8), np.float32)
        edges = np.linspace(0, 201, 9).astype(int)
        for i, w in enumerate(waves):
            n = len(w) // 400
            frames = np.asarray(w[: n * 400], np.float64).reshape(n, 400)
            spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
            bands = np.stack([spec[:, a:b].sum(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
            feat = np.log(bands + 1e-6).mean(axis=0)
            rng = np.random.default_rng(len(w))
            out[i, 0] = rng.normal(size=8)
            out[i, 1] = feat
            out[i, 2] = rng.normal(size=8) * 2
        return out


def tone(freq: float, seconds: float, rng: np.random.Generator, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28)) + 0.01 * rng.normal(size=len(t))).astype(np.float32)


def training_set(rng: np.random.Generator, n_per_class: int = 20):
    """Waveforms of three classes: 'low' tones (~300 Hz), 'high' tones (~3 kHz), 'quiet' near-silence."""
    waves, labels, speakers = [], [], []
    for k in range(n_per_class):
        spk = f"s{k % 5}"
        waves.append(tone(rng.uniform(200, 400), rng.uniform(1.0, 2.0), rng)); labels.append("low"); speakers.append(spk)
        waves.append(tone(rng.uniform(2500, 3500), rng.uniform(1.0, 2.0), rng)); labels.append("high"); speakers.append(spk)
        waves.append((0.01 * rng.normal(size=int(rng.uniform(1.0, 2.0) * RATE))).astype(np.float32)); labels.append("quiet"); speakers.append(spk)
    return waves, labels, speakers


def build_cache(path, rng=None, n_per_class: int = 20):
    """A float32 cache of the stand-in encoder over :func:`training_set`; returns (path, waves)."""
    from probekit.cache import write_cache

    rng = rng or np.random.default_rng(0)
    waves, labels, speakers = training_set(rng, n_per_class)
    emb = SpectralEncoder().encode(waves)
    sets = [lab + (";tonal" if lab != "quiet" else "") for lab in labels]
    write_cache(path, [f"u{i}" for i in range(len(waves))], emb,
                {"speaker": speakers, "label": labels, "labels": sets},
                {"encoder": "spectral-test", "revision": "", "commit": "", "pooling": "mean", "sample_rate": RATE, "whisper_mode": ""},
                durations=np.array([len(w) / RATE for w in waves]), dtype="float32")
    return path, waves


def save_tiny_whisper(path: Path, layers: int = 3) -> Path:
    """Save a randomly initialised Whisper (d_model 32, ``layers`` encoder layers, seed 0) and its feature
    extractor to ``path``; skips the test where transformers is not installed."""
    transformers = pytest.importorskip("transformers")
    import torch

    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=layers, decoder_layers=1, encoder_attention_heads=2,
                                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                                     vocab_size=64, max_source_positions=1500, max_target_positions=32,
                                     decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                     suppress_tokens=[], begin_suppress_tokens=[])
    torch.manual_seed(0)
    transformers.WhisperForConditionalGeneration(cfg).save_pretrained(path)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path
