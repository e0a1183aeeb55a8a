"""How much running the encoder only up to the exported layer saves, as time ratios measured in one run.

    PYTHONPATH=. python benchmarks/truncation_saving.py [--whisper ../shared/models/whisper-tiny.en]

For each model: seconds per pass over the same clips with ``EncoderSpec(max_layer=k)`` against the full
pass, best of ``--repeats``; the ratio is compared with the ideal k / N (the front end is not free, so
it sits a little above). Models: whisper-tiny.en (4 layers, padded mode) when available, and a randomly
initialised 24-layer wav2vec2 built from a config (no download) for the "layer 6 of 24" case.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _time(encoder, waves, repeats: int) -> float:
    encoder.encode(waves[:1])  # warm-up: first-call allocations are not the model's cost
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        encoder.encode(waves)
        best = min(best, time.perf_counter() - t0)
    return best


def _deep_random_model(folder: Path, layers: int) -> Path:
    import torch
    import transformers

    # A slim convolutional front end keeps the transformer stack the dominant cost, as in real large models.
    cfg = transformers.Wav2Vec2Config(hidden_size=384, num_hidden_layers=layers, num_attention_heads=6, intermediate_size=1536,
                                      conv_dim=(64,) * 7, do_stable_layer_norm=True, feat_extract_norm="layer")
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(cfg).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    return folder


def measure(model: str, ks: list[int], waves, repeats: int, whisper_mode: str = "padded") -> list[tuple[int, int, float, float]]:
    from probekit.extract.encoders import EncoderSpec, load_encoder

    full = load_encoder(EncoderSpec(model, whisper_mode=whisper_mode, device="cpu"))
    n = full.num_hidden_states - 1
    t_full = _time(full, waves, repeats)
    del full
    rows = []
    for k in ks:
        enc = load_encoder(EncoderSpec(model, whisper_mode=whisper_mode, device="cpu", max_layer=k))
        rows.append((k, n, _time(enc, waves, repeats), t_full))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = os.environ.get("PROBEKIT_SHARED", str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--whisper", default=str(Path(shared) / "models" / "whisper-tiny.en"))
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.normal(size=int(args.seconds * 16000))).astype(np.float32) for _ in range(args.clips)]
    results = []
    if (Path(args.whisper) / "config.json").is_file():
        results.append(("whisper-tiny.en (padded)", measure(args.whisper, [1, 2, 3], waves, args.repeats)))
    else:
        print(f"skipping whisper-tiny.en: {args.whisper} not found (set PROBEKIT_SHARED)")
    with tempfile.TemporaryDirectory() as tmp:
        model = _deep_random_model(Path(tmp) / "w2v2-24", 24)
        results.append(("random wav2vec2, 24 layers", measure(str(model), [6, 12, 18], waves, args.repeats)))
    print(f"{len(waves)} clips x {args.seconds:.1f} s, CPU, {torch.get_num_threads()} thread(s), best of {args.repeats}")
    print(f"{'model':30s} {'layer':>8s} {'s/pass':>8s} {'full s':>8s} {'ratio':>6s} {'ideal':>6s}")
    for name, rows in results:
        for k, n, t, t_full in rows:
            print(f"{name:30s} {k:>3d} of {n:<2d} {t:8.3f} {t_full:8.3f} {t / t_full:6.2f} {k / n:6.2f}")


if __name__ == "__main__":
    main()
