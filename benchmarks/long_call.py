"""Score a synthetic call of EmoDB clips in bounded memory, and check the timeline's peaks fall on the right clips.

    PYTHONPATH=. python benchmarks/long_call.py [--minutes 10 60] [--window 3 --hop 3] [--held-out 03]

1. Embeds EmoDB with whisper-tiny.en (fast mode, float32 cache) and exports a 7-class logreg probe on
   hidden state 2, trained WITHOUT the held-out speaker.
2. For each length, writes a call of the held-out speaker's clips (cycled, shuffled) with 1-3 s of
   low noise between them, block by block, and scores it in a child process with
   ``Scorer.timeline`` (CSV + PNG), reporting the child's peak RSS and wall time.
3. Per emotion: ROC-AUC of the window probability for windows that overlap a clip of that emotion
   against all other windows, and the share of that emotion's clips whose best window says it.
CI runs the same kind of check on a 2-minute call (tests/test_predict_emodb.py) and the bounded-memory
check at 10 vs 60 minutes with a stand-in encoder (tests/test_timeline.py); this runs the real 60 minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
from probekit.deploy.scorer import load_scorer
def peak_mb():
    # VmHWM belongs to this process image; getrusage's ru_maxrss would carry the parent's peak over exec.
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
t0 = time.perf_counter()
tl = load_scorer(sys.argv[1], device="cpu").timeline(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]),
        csv_path=sys.argv[5], png_path=sys.argv[6], batch_size=16)
print(json.dumps({"rss_mb": peak_mb(),
                  "seconds": time.perf_counter() - t0, "windows": len(tl.start)}))
"""


def build_model(manifest: Path, whisper: str, held_out: str, work: Path) -> tuple[Path, list[dict]]:
    from probekit.extract.audio import load_segment
    from probekit.cache import write_cache
    from probekit.extract.encoders import EncoderSpec, load_encoder
    from probekit.deploy.export import export_probe

    rows = list(csv.DictReader(open(manifest)))
    for r in rows:
        r["file"] = str(manifest.parent / r["path"])
    model = work / "model"
    if not (model / "manifest.json").is_file():
        enc = load_encoder(EncoderSpec(whisper, whisper_mode="fast", device="cpu"))
        waves = [load_segment(r["file"]) for r in rows]
        emb = np.concatenate([enc.encode(waves[i:i + 16]) for i in range(0, len(waves), 16)])
        attrs = {k: enc.identity.get(k, "") for k in ("encoder", "revision", "commit", "config_hash", "whisper_mode")}
        attrs.update(pooling="mean", sample_rate=16000)
        cache = write_cache(work / "emodb_fast.h5", [r["id"] for r in rows], emb,
                            {c: [r[c] for r in rows] for c in ("speaker", "label", "labels")}, attrs, dtype="float32")
        export_probe(cache, 2, model, task="multiclass", target="label", probe="logreg", exclude_speakers=[held_out])
    return model, [r for r in rows if r["speaker"] == held_out]


def write_call(clips: list[dict], minutes: float, path: Path, seed: int = 0) -> list[tuple[str, float, float]]:
    """Write the call block by block; return (emotion, start_s, end_s) of every clip placed."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    placed, t, total = [], 0.0, minutes * 60
    with sf.SoundFile(str(path), "w", 16000, 1, subtype="PCM_16") as out:
        while True:
            gap = rng.uniform(1, 3)
            out.write((0.002 * rng.normal(size=int(gap * 16000))).astype(np.float32))
            t += gap
            clip = clips[rng.integers(len(clips))]
            wave, _ = sf.read(clip["file"], dtype="float32")
            if t + len(wave) / 16000 > total:
                break
            out.write(wave)
            placed.append((clip["label"], t, t + len(wave) / 16000))
            t += len(wave) / 16000
    return placed


def evaluate(timeline_csv: Path, placed) -> dict:
    from sklearn.metrics import roc_auc_score

    rows = list(csv.DictReader(open(timeline_csv)))
    start = np.array([float(r["start_s"]) for r in rows])
    end = np.array([float(r["end_s"]) for r in rows])
    labels = [k[2:] for k in rows[0] if k.startswith("p_")]
    p = np.array([[float(r[f"p_{l}"]) for l in labels] for r in rows])
    out = {}
    for j, lab in enumerate(labels):
        spans = [(s, e) for k, s, e in placed if k == lab]
        overlap = np.array([any(s < e1 and e > s1 for s1, e1 in spans) for s, e in zip(start, end)])
        if not overlap.any() or overlap.all():
            continue
        hits = []
        for s1, e1 in spans:
            win = (start < e1) & (end > s1)
            best = np.flatnonzero(win)[np.argmax(p[win, j])]
            hits.append(int(np.argmax(p[best]) == j))
        out[lab] = {"auc": float(roc_auc_score(overlap, p[:, j])), "clips": len(spans), "clip_hit_rate": float(np.mean(hits))}
    return out


def main() -> None:
    shared = Path(os.environ.get("PROBEKIT_SHARED", str(Path(__file__).resolve().parents[2] / "shared")))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=shared / "data" / "emodb" / "manifest.csv")
    ap.add_argument("--whisper", default=str(shared / "models" / "whisper-tiny.en"))
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--hop", type=float, default=3.0)
    ap.add_argument("--held-out", default="03")
    ap.add_argument("--work", type=Path, default=Path("cache") / "long_call")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, clips = build_model(args.manifest, args.whisper, args.held_out, args.work)
    print(f"model ready ({time.perf_counter() - t0:.0f} s): {model}, {len(clips)} clips of speaker {args.held_out}")
    for minutes in args.minutes:
        wav = args.work / f"call_{minutes:g}min.wav"
        placed = write_call(clips, minutes, wav)
        csv_path, png = args.work / f"call_{minutes:g}min.timeline.csv", args.work / f"call_{minutes:g}min.timeline.png"
        res = subprocess.run([sys.executable, "-c", CHILD, str(model), str(wav), str(args.window), str(args.hop), str(csv_path), str(png)],
                             capture_output=True, text=True)
        if res.returncode:
            sys.exit(res.stderr)
        stats = json.loads(res.stdout.strip().splitlines()[-1])
        wav.unlink()
        print(f"{minutes:g} min call: {stats['windows']} windows, peak RSS {stats['rss_mb']:.0f} MB, "
              f"{stats['seconds']:.0f} s ({minutes * 60 / stats['seconds']:.1f}x real time); {len(placed)} clips")
        for lab, m in evaluate(csv_path, placed).items():
            print(f"   {lab:10s} window AUC {m['auc']:.3f}   clips {m['clips']:4d}   best window picks it {m['clip_hit_rate']:.2f}")
        print(f"   timeline: {csv_path}, {png}")


if __name__ == "__main__":
    main()
