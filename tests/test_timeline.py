"""Timelines: streamed windows equal slices of the whole file, peaks fall on the right spans, memory is bounded."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from probekit.deploy.export import export_probe
from probekit.deploy.scorer import load_scorer
from probekit.deploy.timeline import _windows, iter_blocks

from _predict_helpers import RATE, SpectralEncoder, build_cache, tone


def test_streamed_windows_equal_slices_of_the_whole_signal():
    x = np.arange(10_000, dtype=np.float32)
    for block in (1, 7, 333, 10_000):
        blocks = (x[i:i + block] for i in range(0, len(x), block))
        got = list(_windows(blocks, 1000, 400, 100))
        starts = [s for s, _ in got]
        assert starts == list(range(0, 8801, 400)) + [9200]  # full windows, then one shorter tail to the end
        for s, w in got:
            np.testing.assert_array_equal(w, x[s:s + 1000])
    # A file shorter than one window is one window; a too-short tail is dropped.
    assert [len(w) for _, w in _windows(iter([x[:700]]), 1000, 400, 100)] == [700]
    assert [s for s, _ in _windows(iter([x[:1050]]), 1000, 1000, 100)] == [0]


def test_blocks_are_resampled_and_span_reads_only_its_frames(tmp_path):
    rng = np.random.default_rng(0)
    x = tone(440, 3.0, rng)
    sf.write(tmp_path / "a.wav", x, RATE, subtype="FLOAT")
    whole = np.concatenate(list(iter_blocks(tmp_path / "a.wav", RATE, block_seconds=0.7)))
    np.testing.assert_array_equal(whole, x)
    np.testing.assert_array_equal(np.concatenate(list(iter_blocks(tmp_path / "a.wav", RATE, 1.0, 2.5))), x[RATE:int(2.5 * RATE)])
    st = np.stack([x, -x], axis=1)
    sf.write(tmp_path / "s.wav", st, 48000, subtype="FLOAT")  # stereo at 48 kHz -> mono at 16 kHz
    y = np.concatenate(list(iter_blocks(tmp_path / "s.wav", RATE, block_seconds=0.3)))
    assert abs(len(y) - len(x) / 3) <= 2 and np.abs(y).max() < 1e-4  # the channels cancel on downmix


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("t")
    cache, _ = build_cache(root / "c.h5")
    return export_probe(cache, 1, root / "m", task="multiclass", target="label", probe="logreg", evaluate=False)


def test_timeline_peaks_fall_on_the_planted_spans(model, tmp_path):
    rng = np.random.default_rng(2)
    parts, planted, t = [], [], 0.0
    for i in range(12):
        gap = rng.uniform(3, 6)
        parts.append(0.01 * rng.normal(size=int(gap * RATE)).astype(np.float32)); t += gap
        kind = "high" if i % 3 == 0 else "low"
        dur = rng.uniform(1.5, 2.5)
        parts.append(tone(3000 if kind == "high" else 300, dur, rng)); planted.append((kind, t, t + dur)); t += dur
    sf.write(tmp_path / "call.wav", np.concatenate(parts), RATE)
    scorer = load_scorer(model, encoder=SpectralEncoder())
    tl = scorer.timeline(tmp_path / "call.wav", 1.0, 0.5, csv_path=tmp_path / "tl.csv", png_path=tmp_path / "tl.png", vad=None)
    assert tl.labels == ("high", "low", "quiet")
    p_high = tl.probabilities[:, 0]
    overlaps_high = np.array([any(s < e1 and e > s1 for k, s1, e1 in planted if k == "high") for s, e in zip(tl.start, tl.end)])
    # Every window the probe calls 'high' overlaps a planted high-tone clip, and every such clip has a window above 0.5.
    assert overlaps_high[tl.decisions[:, 0]].all()
    for kind, s1, e1 in planted:
        inside = (tl.start >= s1) & (tl.end <= e1)
        if inside.any():
            assert (p_high[inside].max() > 0.5) == (kind == "high")
    assert overlaps_high[np.argmax(p_high)]
    rows = list(csv.DictReader(open(tmp_path / "tl.csv")))
    assert len(rows) == len(tl.start) and float(rows[3]["start_s"]) == pytest.approx(1.5)
    assert np.allclose([float(r["p_high"]) for r in rows], p_high, atol=1e-5)
    assert (tmp_path / "tl.png").stat().st_size > 5000


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, soundfile as sf
    def peak_mb():
        # VmHWM belongs to this process image; getrusage's ru_maxrss would carry the parent's peak over exec.
        line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    sys.path.insert(0, sys.argv[4])
    from _predict_helpers import SpectralEncoder
    from probekit.deploy.scorer import load_scorer
    path, minutes = sys.argv[2], float(sys.argv[3])
    rng = np.random.default_rng(0)
    # Written in blocks so the writer itself never holds the call in memory.
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as f:
        for _ in range(int(minutes * 6)):
            f.write((0.05 * rng.normal(size=160000)).astype(np.float32))
    enc = SpectralEncoder()
    tl = load_scorer(sys.argv[1], encoder=enc).timeline(path, 2.0, 2.0, batch_size=8, vad=None)
    print(json.dumps({"rss_mb": peak_mb(), "windows": len(tl.start),
                      "max_batch_samples": enc.max_batch_samples}))
    """
)


@pytest.mark.slow
def test_memory_does_not_grow_with_call_length(model, tmp_path):
    script = tmp_path / "rss.py"
    script.write_text(_RSS_SCRIPT)
    out = {}
    for minutes in (10, 60):
        res = subprocess.run([sys.executable, str(script), str(model), str(tmp_path / f"{minutes}.wav"), str(minutes),
                              str(Path(__file__).parent)], capture_output=True, text=True, check=True)
        out[minutes] = json.loads(res.stdout.strip().splitlines()[-1])
        (tmp_path / f"{minutes}.wav").unlink()
    assert out[60]["windows"] == 6 * out[10]["windows"] == 1800
    assert out[60]["max_batch_samples"] == 8 * 2 * RATE
    # An hour of 16 kHz float32 is 230 MB; streaming must keep the 60-minute run within a few MB of the 10-minute one.
    print({m: round(o["rss_mb"]) for m, o in out.items()})
    assert out[60]["rss_mb"] - out[10]["rss_mb"] < 20, out
