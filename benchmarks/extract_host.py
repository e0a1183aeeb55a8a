"""Host side of `probekit extract`: audio seconds per second of everything but the forward pass.

Runs `extract_cache` (what `probekit extract` calls) on copies of EmoDB clips, once with this
checkout and once with the code of an older commit (default: the last one before the torch
feature path), each in its own process, one after the other, in one run. The encoder's forward
pass is timed from outside, with hooks on the loaded model; model loading is timed by wrapping
the loader. Then

    host side = audio seconds / (wall - forward - model load)      [audio-s/s]

which is how fast the accelerator would be fed if its forward cost nothing. Encoders:

- the real Whisper tiny.en from $PROBEKIT_SHARED, padded mode (30 s windows);
- a wav2vec2 model with layer-norm feature encoder (wav2vec2-large / WavLM style) built from a
  small config, random weights, no download.

    PROBEKIT_SHARED=../shared python benchmarks/extract_host.py [--clips 160] [--copies 2] [--threads 2]

Prints one table per encoder and the peak resident memory of each run. Timings on a shared
machine are noisy: compare the two columns of one run, not runs across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import io
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _manifests import emodb_copies  # noqa: E402

# The last commit of main before extraction moved features and pooling onto the device.
BASELINE = "7d8be8c"

# Run inside each child process, with the code under test first on sys.path.
_DRIVER = r"""
import json, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from probekit.extract._extract import extract_cache
from probekit.extract.encoders import EncoderSpec, load_encoder

clock = {"forward": 0.0, "load": 0.0}

def timed_loader(spec):
    t0 = time.perf_counter()
    enc = load_encoder(spec)
    clock["load"] += time.perf_counter() - t0
    starts = []
    enc.model.register_forward_pre_hook(lambda *a: starts.append(time.perf_counter()))
    def done(*a):
        clock["forward"] += time.perf_counter() - starts.pop()
    enc.model.register_forward_hook(done)
    return enc

kwargs = {"workers": args["workers"]} if args["workers"] else {}
t0 = time.perf_counter()
res = extract_cache(args["manifest"], EncoderSpec(args["model"], whisper_mode="padded", device="cpu"), args["out"],
                    pooling="mean", dtype="float32", batch_seconds=args["batch_seconds"], progress=False,
                    loader=timed_loader, **kwargs)
wall = time.perf_counter() - t0
import probekit
# VmHWM is this process image's own peak (ru_maxrss can carry the parent's over exec).
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print("RESULT " + json.dumps({"code": probekit.__file__, "wall": wall, "audio": res.audio_seconds, "n": res.n_segments,
                              "peak_rss": int(hwm.split()[1]) * 1024, **clock}))
"""


def _wav2vec2_model(folder: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        conv_dim=(64,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
    )
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def _export_baseline(ref: str, folder: Path) -> Path:
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "probekit"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _run(code: Path, model: str, manifest: Path, out: Path, threads: int, batch_seconds: float, workers: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS=str(threads))
    args = dict(manifest=str(manifest), model=model, out=str(out), threads=threads, batch_seconds=batch_seconds, workers=workers)
    # cwd away from the checkout: `python -c` puts the working directory first on sys.path.
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(args)], env=env, capture_output=True, text=True, cwd=out.parent)
    if proc.returncode != 0:
        raise SystemExit(f"run with {code} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _report(name: str, old: dict, new: dict) -> None:
    def host(r):
        return r["audio"] / max(r["wall"] - r["forward"] - r["load"], 1e-9)

    print(f"\n{name}: {new['n']} clips, {new['audio']:.0f} s of audio")
    print(f"| | baseline ({BASELINE_USED}) | this checkout |")
    print("|---|---:|---:|")
    for label, key in (("wall, s", "wall"), ("forward (timed by hooks), s", "forward"), ("model load, s", "load")):
        print(f"| {label} | {old[key]:.1f} | {new[key]:.1f} |")
    print(f"| host side, audio-s/s | {host(old):,.0f} | {host(new):,.0f} |")
    print(f"| peak host memory, MiB | {old['peak_rss'] / 2**20:,.0f} | {new['peak_rss'] / 2**20:,.0f} |")
    print(f"host side ratio: {host(new) / host(old):.1f}x   (code: {old['code']} vs {new['code']})")


def main() -> None:
    global BASELINE_USED
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=160, help="EmoDB clips per copy (spread over the corpus)")
    ap.add_argument("--copies", type=int, default=2, help="copies of the clips (new ids, same files)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (and OMP_NUM_THREADS) of each run")
    ap.add_argument("--workers", type=int, default=None, help="decoding threads of this checkout (default: its own)")
    ap.add_argument("--baseline", default=BASELINE, help="git commit whose code is the baseline")
    ap.add_argument("--batch-seconds", type=float, default=120.0)
    ap.add_argument("--only", choices=("whisper", "wav2vec2"), default=None)
    a = ap.parse_args()
    BASELINE_USED = a.baseline
    shared = Path(os.environ.get("PROBEKIT_SHARED", ROOT.parent / "shared"))
    emodb, whisper = shared / "data" / "emodb" / "manifest.csv", shared / "models" / "whisper-tiny.en"
    if not emodb.is_file() or not whisper.is_dir():
        raise SystemExit(f"EmoDB and whisper-tiny.en are needed under {shared} (set PROBEKIT_SHARED)")
    print(f"machine: {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f} (shared machines make timings noisy)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = emodb_copies(emodb, tmp / "emodb-copies.csv", a.copies, a.clips)
        old_code = _export_baseline(a.baseline, tmp / "baseline")
        models = {"whisper": ("Whisper tiny.en, padded mode", str(whisper)),
                  "wav2vec2": ("wav2vec2 (layer-norm, hidden 64, 2 layers, random, from a config)", None)}
        for key, (name, model) in models.items():
            if a.only and key != a.only:
                continue
            if model is None:
                model = str(_wav2vec2_model(tmp / "w2v2"))
            old = _run(old_code, model, manifest, tmp / f"{key}-old.h5", a.threads, a.batch_seconds, None)
            new = _run(ROOT, model, manifest, tmp / f"{key}-new.h5", a.threads, a.batch_seconds, a.workers)
            _report(name, old, new)
            _compare(tmp / f"{key}-old.h5", tmp / f"{key}-new.h5")


def _compare(old: Path, new: Path) -> None:
    """The two caches must hold the same vectors (float32 tolerance), or the speed means nothing."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from probekit.cache import EmbeddingCache

    a, b = EmbeddingCache(old), EmbeddingCache(new)
    assert list(a.ids) == list(b.ids)
    worst = max(float(np.abs(a.read_layer(i) - b.read_layer(i)).max() / (np.abs(a.read_layer(i)).max() + 1e-12))
                for i in range(a.num_layers))
    print(f"largest difference between the two caches, relative to the layer's largest value: {worst:.1e}")


BASELINE_USED = BASELINE

if __name__ == "__main__":
    main()
