"""Host side of `probekit extract` in seconds: the encoder's forward pass replaced by a stand-in.

For iterating on the host side (features, pooling, journaling, the pre-pass, the cache write)
without paying for the forward pass: the real Whisper tiny.en is loaded from $PROBEKIT_SHARED,
then its ``forward`` returns random hidden states of the shape the real one returns
(``(B, 1500, d_model)`` per hidden state in padded mode). Everything else is the code under test.
The stand-in's time is still timed by hooks and subtracted, as in ``extract_host.py``:

    host side = audio seconds / (wall - forward - model load)      [audio-s/s]

    PROBEKIT_SHARED=../shared python benchmarks/extract_host_profile.py [--clips 200] [--copies 1] [--cprofile 25]

Prints ``--profile``'s split of the wall time and, with ``--cprofile N``, the N functions with the
most own time. The embeddings it writes mean nothing (random hidden states): this measures
time only. ``--real`` keeps the real forward pass, for the same split of a real run.
``extract_host.py`` is the benchmark against the older code.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _manifests import emodb_copies  # noqa: E402


def _stubbed_loader(clock: dict, prof=None, real: bool = False):
    """A loader of the real encoder whose forward returns random hidden states of the right shape
    (or the real forward, with ``real``), timed by hooks; ``prof`` (a ``cProfile.Profile``) is
    paused while the model loads: its imports are not host work."""
    import torch

    from probekit.extract.encoders import load_encoder

    def load(spec):
        if prof is not None:
            prof.disable()
        t0 = time.perf_counter()
        enc = load_encoder(spec)
        clock["load"] += time.perf_counter() - t0
        if prof is not None:
            prof.enable()
        model = enc.model
        n_states = len(model.layers) + 1
        frames = int(model.embed_positions.num_embeddings)
        size = int(enc.hidden_size)
        gen = torch.Generator().manual_seed(0)
        made: dict[int, tuple] = {}

        def forward(mel, output_hidden_states=True, **_):
            # The real encoder insists on 3000 mel frames, and so does the stand-in.
            assert mel.shape[-1] == 2 * frames, mel.shape
            n = mel.shape[0]
            if n not in made:  # drawn once per batch size: the stand-in should cost little
                made[n] = tuple(torch.randn((n, frames, size), generator=gen) for _ in range(n_states))
            return SimpleNamespace(hidden_states=made[n])

        if not real:
            model.forward = forward
        starts: list[float] = []
        model.register_forward_pre_hook(lambda *a: starts.append(time.perf_counter()))

        def done(*a):
            clock["forward"] += time.perf_counter() - starts.pop()

        model.register_forward_hook(done)
        return enc

    return load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200, help="EmoDB clips per copy (spread over the corpus)")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--workers", type=int, default=None, help="decoding threads (default: probekit's)")
    ap.add_argument("--batch-seconds", type=float, default=None, help="default: probekit's")
    ap.add_argument("--pooling", default="mean", choices=("mean", "mean+std"))
    ap.add_argument("--real", action="store_true", help="keep the real forward pass (slow: for the stage split of a real run)")
    ap.add_argument("--cprofile", type=int, default=0, help="print the N functions with the most own time")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from probekit.extract._extract import extract_cache, format_profile
    from probekit.extract.encoders import EncoderSpec

    shared = Path(os.environ.get("PROBEKIT_SHARED", ROOT.parent / "shared"))
    emodb, whisper = shared / "data" / "emodb" / "manifest.csv", shared / "models" / "whisper-tiny.en"
    if not emodb.is_file() or not whisper.is_dir():
        raise SystemExit(f"EmoDB and whisper-tiny.en are needed under {shared} (set PROBEKIT_SHARED)")
    print(f"load average {os.getloadavg()[0]:.1f}")
    clock = {"forward": 0.0, "load": 0.0}
    options = {k: v for k, v in (("workers", a.workers), ("batch_seconds", a.batch_seconds)) if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = emodb_copies(emodb, Path(tmp) / "emodb-copies.csv", a.copies, a.clips)
        spec = EncoderSpec(str(whisper), whisper_mode="padded", device="cpu")

        prof = None
        if a.cprofile:
            import cProfile
            import pstats

            prof = cProfile.Profile()

        def run():
            return extract_cache(manifest, spec, Path(tmp) / "out.h5", pooling=a.pooling, dtype="float32", progress=False,
                                 loader=_stubbed_loader(clock, prof, a.real), profile=True, **options)

        t0 = time.perf_counter()
        if prof is not None:
            res = prof.runcall(run)
        else:
            res = run()
        wall = time.perf_counter() - t0
    host = wall - clock["forward"] - clock["load"]
    print(format_profile(res))
    split = {k: v for k, v in res.timings.items()}
    split["other"] = split.get("other", 0.0) - clock["load"]  # the profile's "other" holds the model load
    print("stages, s: " + ", ".join(f"{k} {v:.3f}" for k, v in split.items()) + " (other without the model load)")
    print(f"{res.n_segments} clips, {res.audio_seconds:.0f} s of audio; wall {wall:.2f} s, {'real' if a.real else 'stand-in'} forward "
          f"{clock['forward']:.2f} s, model load {clock['load']:.2f} s, host side {host:.2f} s = "
          f"{res.audio_seconds / host:,.0f} audio-s/s")
    if a.cprofile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.cprofile)


if __name__ == "__main__":
    main()
