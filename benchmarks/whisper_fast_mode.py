"""Whisper fast mode against padded mode on EmoDB with whisper-tiny.en: fidelity, speed, probe score.

    PROBEKIT_SHARED=../shared python benchmarks/whisper_fast_mode.py [--limit N] [--batch 8]

Both modes run in this one process on the same clips (sorted by length, same batches), so the
speed ratio is measured under the same conditions. Fidelity: per-layer cosine similarity of the
mean-pooled vectors, fast vs padded. Probe: leave-one-speaker-out, standardised logistic
regression (C=1), balanced accuracy of the 7-class emotion task, per hidden state, for each mode.
Prints a markdown table (docs/encoders.md holds a copy).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probekit.extract.encoders import EncoderSpec, load_encoder
from probekit.manifest import read_manifest


def _encode_all(encoder, waves, order, batch):
    out = np.empty((len(waves), encoder.num_hidden_states, encoder.hidden_size), dtype=np.float32)
    start = time.perf_counter()
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        out[idx] = encoder.encode([waves[j] for j in idx], "mean")
    return out, time.perf_counter() - start


def _probe(features, labels, speakers):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    pred = cross_val_predict(model, features, labels, groups=speakers, cv=LeaveOneGroupOut())
    return balanced_accuracy_score(labels, pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="use this many clips, evenly spaced over the corpus (0 = all)")
    parser.add_argument("--batch", type=int, default=8, help="clips per encode() call")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    shared = os.environ.get("PROBEKIT_SHARED")
    if not shared:
        raise SystemExit("set PROBEKIT_SHARED to the folder holding models/whisper-tiny.en and data/emodb")
    torch.set_num_threads(args.threads)
    model_dir = Path(shared) / "models" / "whisper-tiny.en"
    segments = list(read_manifest(Path(shared) / "data" / "emodb" / "manifest.csv").segments)
    if args.limit and args.limit < len(segments):
        picked = np.linspace(0, len(segments) - 1, args.limit).round().astype(int)
        segments = [segments[i] for i in picked]
    waves = [sf.read(s.path, dtype="float32")[0] for s in segments]
    labels = np.array([s.labels["label"] for s in segments])
    speakers = np.array([s.speaker for s in segments])
    order = np.argsort([len(w) for w in waves], kind="stable")
    seconds = sum(len(w) for w in waves) / 16000

    vectors, timings = {}, {}
    for mode in ("padded", "fast"):
        encoder = load_encoder(EncoderSpec(str(model_dir), whisper_mode=mode, device="cpu"))
        encoder.encode([waves[0]])  # warm-up, not timed
        vectors[mode], timings[mode] = _encode_all(encoder, waves, order, args.batch)

    a, b = vectors["fast"], vectors["padded"]
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))  # (clips, layers)
    print(
        f"EmoDB, whisper-tiny.en, {len(waves)} clips, {len(set(speakers))} speakers ({seconds:.0f} s of audio), "
        f"CPU, {args.threads} threads, batch {args.batch}"
    )
    print(
        f"encode time: padded {timings['padded']:.1f} s, fast {timings['fast']:.1f} s; "
        f"speed-up fast/padded = {timings['padded'] / timings['fast']:.1f}x"
    )
    print()
    print("| hidden state | cosine mean | cosine min | UAR padded | UAR fast |")
    print("|---:|---:|---:|---:|---:|")
    for layer in range(a.shape[1]):
        uar = {m: _probe(vectors[m][:, layer], labels, speakers) for m in ("padded", "fast")}
        print(
            f"| {layer} | {cos[:, layer].mean():.4f} | {cos[:, layer].min():.4f} | "
            f"{uar['padded']:.3f} | {uar['fast']:.3f} |"
        )


if __name__ == "__main__":
    main()
