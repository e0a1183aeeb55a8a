"""Synthetic caches for probe tests: only one layer carries the emotion signal."""

from __future__ import annotations

import numpy as np

from probekit.cache import write_cache

EMOTIONS = ("anger", "happiness", "sadness")


def synth_cache(path, signal_layer=2, n_layers=4, n_speakers=8, per_speaker=12, dim=6, seed=0, strength=3.0, split=None, attrs=None):
    """A cache whose layer ``signal_layer`` separates three emotions; other layers are noise.

    ``labels`` is a ``;``-set: the emotion plus ``negative`` for anger and sadness.
    """
    rng = np.random.default_rng(seed)
    n = n_speakers * per_speaker
    speakers = np.repeat([f"spk{i}" for i in range(n_speakers)], per_speaker)
    code = np.arange(n) % 3
    emb = rng.normal(size=(n, n_layers, dim))
    emb[:, signal_layer, :3] += strength * np.eye(3)[code]
    emotion = [EMOTIONS[c] for c in code]
    meta = {
        "speaker": list(speakers),
        "label": emotion,
        "labels": [e + (";negative" if e != "happiness" else "") for e in emotion],
    }
    if split is not None:
        meta["split"] = list(split(speakers))
    write_cache(path, [f"u{i:03d}" for i in range(n)], emb, meta, attrs=attrs or {"encoder": "synth"}, dtype="float32")
    return path
