"""Extraction throughput: `probekit extract` against a plain one-utterance-at-a-time transformers loop.

Both run on the same clips, the same CPU threads and the same loaded weights' checkpoint; the ratio is
measured in one run. Also prints how well the two agree (per-layer cosine), since a fast wrong
extractor is worth nothing.

    PROBEKIT_SHARED=../shared python benchmarks/extract_throughput.py [--limit 120] [--threads 2]

Defaults: EmoDB's manifest and whisper-tiny.en from $PROBEKIT_SHARED, CPU, float32, mean pooling.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _sub_manifest(manifest: Path, limit: int, folder: Path) -> Path:
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)[:limit]
        fields = reader.fieldnames
    for row in rows:
        row["path"] = str((manifest.parent / row["path"]).resolve())
    out = folder / f"{manifest.stem}-{len(rows)}.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return out


def plain_loop(model_dir: str, paths: list[Path]) -> tuple[np.ndarray, float]:
    """The baseline a researcher writes first: per file, features padded to 30 s, one forward
    pass, mean over the first ceil(n / 320) frames of every hidden state. Returns ``(N, L, D)``
    and the seconds spent encoding (model loading excluded)."""
    import soundfile as sf
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    fe = WhisperFeatureExtractor.from_pretrained(model_dir)
    encoder = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).get_encoder().eval()
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            wave, rate = sf.read(p, dtype="float32")
            assert rate == fe.sampling_rate, "the baseline reads 16 kHz mono files as they are"
            feats = fe(wave, sampling_rate=rate, return_tensors="pt").input_features
            hidden = encoder(feats, output_hidden_states=True).hidden_states
            n = math.ceil(len(wave) / 320)
            out.append(torch.stack([h[0, :n].mean(0) for h in hidden]).numpy())
    return np.stack(out), time.perf_counter() - t0


def main() -> None:
    shared = Path(os.environ.get("PROBEKIT_SHARED", "../shared"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=shared / "data" / "emodb" / "manifest.csv")
    ap.add_argument("--model", default=str(shared / "models" / "whisper-tiny.en"))
    ap.add_argument("--limit", type=int, default=120, help="first N clips of the manifest (0 = all)")
    ap.add_argument("--batch-seconds", type=float, default=120.0)
    ap.add_argument("--whisper-mode", default="padded", choices=["padded", "fast"])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from probekit.cache import EmbeddingCache
    from probekit.extract.encoders import EncoderSpec, load_encoder
    from probekit.extract._extract import extract_cache
    from probekit.manifest import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = _sub_manifest(args.manifest, args.limit or 10**9, tmp)
        man = read_manifest(manifest)
        t_load = time.perf_counter()
        enc = load_encoder(EncoderSpec(model=args.model, whisper_mode=args.whisper_mode, device="cpu"))
        t_load = time.perf_counter() - t_load
        res = extract_cache(manifest, enc, tmp / "c.h5", dtype="float32", batch_seconds=args.batch_seconds, progress=False)
        cache = EmbeddingCache(res.path)
        ours = np.stack([cache.read_layer(i) for i in range(cache.num_layers)], axis=1)
        base, t_base = plain_loop(args.model, [s.path for s in man.segments])

    a = ours / np.linalg.norm(ours, axis=-1, keepdims=True)
    b = base / np.linalg.norm(base, axis=-1, keepdims=True)
    cos = (a * b).sum(-1)  # (N, L)
    audio = res.audio_seconds
    print(f"clips: {len(man)}  audio: {audio:.1f} s  model: {args.model}  whisper_mode: {args.whisper_mode}  "
          f"threads: {args.threads}  batch_seconds: {args.batch_seconds}")
    print(f"model load (probekit): {t_load:.1f} s")
    print(f"probekit extract : {res.wall_seconds:7.1f} s  {audio / res.wall_seconds:7.1f} audio-s/s  (decode, batch, encode, journal, write)")
    print(f"plain loop       : {t_base:7.1f} s  {audio / t_base:7.1f} audio-s/s  (encode only)")
    print(f"speed-up: {t_base / res.wall_seconds:.2f}x")
    print("cosine vs plain loop per layer (min over clips): " + "  ".join(f"L{i}={cos[:, i].min():.6f}" for i in range(cos.shape[1])))


if __name__ == "__main__":
    main()
