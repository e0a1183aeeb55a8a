"""A deterministic stand-in for a speech encoder, and a worker script for kill-and-resume tests.

``FakeEncoder`` honours the encoder contract (``sample_rate``, ``num_hidden_states``,
``hidden_size``, ``min_samples``, ``pads_safely``, ``identity``, ``encode``) with numpy features of
20 ms frames, so tests need no torch. With ``pads_safely=False`` it behaves like wav2vec2-base:
it zero-pads the batch to its longest item and normalises over the padded length, so a segment's
output changes with its batch-mates unless they all have its length.

Run as a script, it extracts a manifest with the fake encoder, sleeping after each batch so that
a test can ``kill -9`` it mid-run::

    python tests/fake_encoder.py MANIFEST OUT [--sleep S] [--batch-seconds B]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

FRAME = 320


@dataclass
class FakeEncoder:
    sample_rate: int = 16000
    num_hidden_states: int = 3
    hidden_size: int = 4
    min_samples: int = 400
    pads_safely: bool = True
    name: str = "fake/encoder"
    revision: str = ""
    calls: list[int] = field(default_factory=list)

    @property
    def identity(self) -> dict[str, str]:
        return {
            "encoder": self.name, "revision": self.revision, "commit": "0" * 40, "config_hash": "cafe",
            "architecture": "Fake", "whisper_mode": "", "sample_rate": str(self.sample_rate), "device": "cpu",
        }

    def encode(self, waves: list[np.ndarray], pooling: str = "mean") -> np.ndarray:
        """``(B, num_hidden_states, hidden_size or 2*hidden_size)`` float32."""
        self.calls.append(len(waves))
        longest = max(len(w) for w in waves)
        out = []
        for w in waves:
            w = np.asarray(w, dtype=np.float64)
            if not self.pads_safely:
                # Like group norm over a zero-padded batch: statistics see the padding.
                w = np.pad(w, (0, longest - len(w)))
                w = (w - w.mean()) / (w.std() + 1e-5)
            n = max(1, len(w) // FRAME)
            frames = w[: n * FRAME].reshape(n, FRAME) if len(w) >= FRAME else w.reshape(1, -1)
            feats = np.stack(
                [frames.mean(1), np.abs(frames).mean(1), frames.std(1), np.abs(np.diff(frames, axis=1)).mean(1)], axis=1
            )
            layers = []
            for k in range(self.num_hidden_states):
                h = np.tanh(feats * (k + 1) + 0.1 * k)
                pooled = h.mean(0)
                if pooling == "mean+std":
                    pooled = np.concatenate([pooled, h.std(0)])
                layers.append(pooled)
            out.append(np.stack(layers))
        return np.stack(out).astype(np.float32)


@dataclass(frozen=True)
class FakeSpec:
    """Stands in for ``EncoderSpec``: what identifies a run before any model is loaded."""

    model: str = "fake/encoder"
    revision: str | None = None
    whisper_mode: str = "padded"


def write_corpus(folder, n: int = 12, seed: int = 0, rates=(16000, 22050, 8000), name: str = "manifest.csv"):
    """Write ``n`` short voiced clips (0.3-1.5 s, mixed rates and channel counts) and a CSV
    manifest over them; lengths repeat so equal-length batching has work to do."""
    import csv
    from pathlib import Path

    import soundfile as sf

    folder = Path(folder)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rate = rates[i % len(rates)]
        seconds = [0.3, 0.5, 0.8, 1.0, 1.5][i % 5]
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (120 + 15 * i) * t) + 0.05 * rng.standard_normal(len(t))
        if i % 4 == 3:
            wave = np.stack([wave, 0.5 * wave], axis=1)  # stereo
        sf.write(folder / "wav" / f"c{i:02d}.wav", wave.astype(np.float32), rate, subtype="PCM_16")
        rows.append({"id": f"c{i:02d}", "path": f"wav/c{i:02d}.wav", "speaker": f"s{i % 3}",
                     "label": ["anger", "neutral", "sadness"][i % 3], "split": "train" if i % 2 else "test"})
    with open(folder / name, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder / name


def main(argv: list[str]) -> int:
    import argparse

    from probekit.extract._extract import extract_cache

    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("out")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--batch-seconds", type=float, default=2.0)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)

    def pause(index: int) -> None:
        print(f"batch {index} done", flush=True)
        time.sleep(args.sleep)

    result = extract_cache(args.manifest, FakeEncoder(), args.out, dtype=args.dtype, batch_seconds=args.batch_seconds,
                           progress=False, on_batch=pause)
    print(f"finished computed={result.batches_computed} resumed={result.batches_resumed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
