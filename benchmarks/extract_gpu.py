"""`probekit extract` on a GPU: audio-hours per GPU-hour, GPU utilisation, host/forward split.

The one short script a session with a GPU runs. Encoders, all offline:

- the real Whisper tiny.en from $PROBEKIT_SHARED (padded and fast mode);
- randomly initialised base- and large-sized wav2vec2, HuBERT and Whisper encoders built from
  configs (same shapes as the public checkpoints, no download).

Audio: EmoDB from $PROBEKIT_SHARED, repeated ``--copies`` times (new ids, same files).
For each encoder it prints audio seconds, wall seconds of the extraction (model load excluded),
audio-hours per GPU-hour, the wall-time split (decode wait, features, forward, pooling, writing:
``profile=True``, so the device is synchronised between stages), GPU utilisation sampled with
``nvidia-smi`` every 0.2 s, peak GPU memory and peak host memory. JSON lines go to ``--json``.

    PROBEKIT_SHARED=shared python benchmarks/extract_gpu.py [--copies 4] [--batch-seconds 600] [--json out.jsonl]
    python benchmarks/extract_gpu.py --device cpu --quick     # smoke test: tiny configs, synthetic clips, CPU

Check the machine's torch first (``python -c "import torch; print(torch.__version__, torch.cuda.is_available())"``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifests import emodb_copies  # noqa: E402

# Shapes of the public checkpoints (hidden, layers, heads, ffn); weights are random.
_W2V2_SIZES = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096)}
_WHISPER_SIZES = {"base": (512, 6, 8, 2048), "large": (1280, 32, 20, 5120)}
_QUICK = {"w2v2": (32, 2, 2, 64), "whisper": (16, 2, 2, 32)}


def _build_w2v2(kind: str, size: tuple[int, int, int, int], folder: Path, large: bool, quick: bool) -> Path:
    import torch
    import transformers

    hidden, layers, heads, ffn = size
    conv = dict(conv_dim=(32,) * 7) if quick else {}
    # base: group-norm feature encoder (equal-length batches only); large: layer norm, like the checkpoints.
    norm = dict(feat_extract_norm="layer", do_stable_layer_norm=True) if large else dict(feat_extract_norm="group", do_stable_layer_norm=False)
    cls_config, cls_model = (transformers.HubertConfig, transformers.HubertModel) if kind == "hubert" else (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model)
    config = cls_config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn, **conv, **norm)
    torch.manual_seed(0)
    cls_model(config).half().save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=large).save_pretrained(folder)
    return folder


def _build_whisper(size: tuple[int, int, int, int], folder: Path) -> Path:
    import torch
    import transformers

    d, layers, heads, ffn = size
    config = transformers.WhisperConfig(
        d_model=d, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=ffn,
        decoder_layers=1, decoder_attention_heads=heads, decoder_ffn_dim=ffn, vocab_size=64,
        decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2, suppress_tokens=[], begin_suppress_tokens=[],
    )
    torch.manual_seed(0)
    transformers.WhisperForConditionalGeneration(config).half().save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def _synthetic_manifest(folder: Path, n: int = 12) -> Path:
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    out = folder / "synthetic.csv"
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "speaker", "label"])
        for i in range(n):
            seconds = 0.5 + 2.5 * rng.random()
            sf.write(folder / "wav" / f"s{i}.wav", (0.1 * rng.standard_normal(int(16000 * seconds))).astype("float32"), 16000)
            w.writerow([f"s{i}", f"wav/s{i}.wav", f"spk{i % 3}", "ab"[i % 2]])
    return out


class _GpuSampler:
    """GPU utilisation (%), sampled with nvidia-smi every ``period`` seconds in a thread."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        while not self._stop.wait(self.period):
            try:
                text = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", index],
                                      capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(text.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join(timeout=10)

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def _measure(name: str, model: str, mode: str, manifest: Path, out: Path, device: str, batch_seconds: float, workers: int | None) -> dict:
    import torch

    from probekit.extract._extract import STAGES, extract_cache
    from probekit.extract.encoders import EncoderSpec, load_encoder

    loaded = {}

    def loader(spec):
        t0 = time.perf_counter()
        enc = load_encoder(spec)
        loaded["seconds"] = time.perf_counter() - t0
        return enc

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with _GpuSampler() as gpu:
        res = extract_cache(manifest, EncoderSpec(model, whisper_mode=mode, device=device), out, dtype="float16",
                            batch_seconds=batch_seconds, progress=False, loader=loader, workers=workers, profile=True)
    wall = res.wall_seconds - loaded.get("seconds", 0.0)
    split = {k: round(res.timings.get(k, 0.0), 3) for k in STAGES}
    row = {
        "encoder": name, "whisper_mode": mode if "whisper" in name else "", "device": device,
        "audio_seconds": round(res.audio_seconds, 1), "segments": res.n_segments, "wall_seconds": round(wall, 2),
        "load_seconds": round(loaded.get("seconds", 0.0), 2),
        "audio_hours_per_gpu_hour": round(res.audio_seconds / max(wall, 1e-9), 1),
        "forward_share": round(split["forward"] / max(wall, 1e-9), 3),
        "host_side_audio_s_per_s": round(res.audio_seconds / max(wall - split["forward"], 1e-9), 1),
        "split_seconds": split, "decode_threads_seconds": round(res.timings.get("decode_threads", 0.0), 2),
        "gpu_util_mean_pct": gpu.mean(), "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
        "peak_host_mib": round(res.peak_rss / 2**20),
    }
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny configs and 12 synthetic clips: a smoke test of this script")
    ap.add_argument("--copies", type=int, default=4, help="EmoDB copies (535 clips, 25 min of audio each)")
    ap.add_argument("--batch-seconds", type=float, default=600.0, help="bound on what the encoder processes per batch")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated encoder names to run (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per encoder here")
    a = ap.parse_args(argv)
    import torch

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""), flush=True)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible: use --device cpu (--quick for a smoke test)")
    shared = Path(os.environ.get("PROBEKIT_SHARED", ROOT / "shared"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.quick:
            manifest = _synthetic_manifest(tmp / "data")
            encoders = {
                "wav2vec2-quick": lambda f: _build_w2v2("wav2vec2", _QUICK["w2v2"], f, large=False, quick=True),
                "hubert-quick": lambda f: _build_w2v2("hubert", _QUICK["w2v2"], f, large=True, quick=True),
                "whisper-quick": lambda f: _build_whisper(_QUICK["whisper"], f),
            }
        else:
            manifest = emodb_copies(shared / "data" / "emodb" / "manifest.csv", tmp / "emodb.csv", a.copies)
            tiny = shared / "models" / "whisper-tiny.en"
            encoders = {"whisper-tiny.en": lambda f: tiny}
            for size in ("base", "large"):
                encoders[f"wav2vec2-{size}"] = lambda f, s=size: _build_w2v2("wav2vec2", _W2V2_SIZES[s], f, s == "large", False)
                encoders[f"hubert-{size}"] = lambda f, s=size: _build_w2v2("hubert", _W2V2_SIZES[s], f, s == "large", False)
                encoders[f"whisper-{size}"] = lambda f, s=size: _build_whisper(_WHISPER_SIZES[s], f)
        only = {x for x in a.only.split(",") if x}
        for name, build in encoders.items():
            if only and name not in only:
                continue
            folder = Path(build(tmp / name))
            modes = ("padded", "fast") if name.startswith("whisper") else ("padded",)
            for mode in modes:
                row = _measure(name, str(folder), mode, manifest, tmp / f"{name}-{mode}.h5", a.device, a.batch_seconds, a.workers)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if a.json is not None:
                    with open(a.json, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
            if folder.parent == tmp:
                shutil.rmtree(folder, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
