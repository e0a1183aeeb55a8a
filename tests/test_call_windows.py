"""Whole calls: the lean padded-Whisper batch equals the encoder's own pass, the VAD gates windows on real
speech, channels are kept apart, and predict scores every good input while naming the bad ones."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from probekit.cli import app
from probekit.deploy.export import export_probe
from probekit.deploy.scorer import load_scorer

from _predict_helpers import RATE, SpectralEncoder, build_cache, save_tiny_whisper, tone


# ------------------------------------------------------------------------------ lean padded Whisper = encode()
@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("w") / "tiny", 3)


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
@pytest.mark.parametrize("pooling", ["mean", "mean+std"])
@pytest.mark.parametrize("mode", ["padded", "fast"])
def test_lean_batch_equals_the_encoders_own_pass(tiny_whisper, layer, pooling, mode):
    from probekit.deploy.batched import embed_layer, lean_applies
    from probekit.extract.encoders import EncoderSpec, load_encoder

    rng = np.random.default_rng(layer)
    # Call windows: full ones, a shorter tail, one that fills the whole 30 s window (no padding to skip), one tiny.
    waves = [rng.normal(size=n).astype(np.float32) * 0.1 for n in (48000, 48000, 20011, 480000, 401)]
    enc = load_encoder(EncoderSpec(str(tiny_whisper), device="cpu", whisper_mode=mode, max_layer=layer))
    assert lean_applies(enc, waves)
    ref = enc.encode(waves, pooling=pooling)[:, layer]
    got = embed_layer(enc, waves, layer, pooling)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)
    # Each window alone gives the same vector as in the batch: nothing leaks between windows.
    np.testing.assert_allclose(embed_layer(enc, waves[2:3], layer, pooling)[0], got[2], atol=2e-5, rtol=0)


@pytest.mark.parametrize("mode", ["padded", "fast"])
def test_a_batch_split_over_cores_gives_the_same_vectors(tiny_whisper, mode):
    import torch

    from probekit.deploy.batched import embed_layer
    from probekit.extract.encoders import EncoderSpec, load_encoder

    rng = np.random.default_rng(5)
    waves = [rng.normal(size=n).astype(np.float32) * 0.1 for n in (48000, 48000, 48000, 20011, 48000)]
    enc = load_encoder(EncoderSpec(str(tiny_whisper), device="cpu", whisper_mode=mode, max_layer=2))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = embed_layer(enc, waves, 2)
        torch.set_num_threads(3)  # three parts of 2, 1 and 2 windows, side by side
        split = embed_layer(enc, waves, 2)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(split, one, atol=1e-5, rtol=0)


def test_windows_longer_than_30_s_take_the_encoders_path(tiny_whisper):
    from probekit.deploy.batched import embed_layer, lean_applies
    from probekit.extract.encoders import EncoderSpec, load_encoder

    waves = [np.random.default_rng(0).normal(size=480001).astype(np.float32) * 0.1]
    for mode in ("padded", "fast"):
        enc = load_encoder(EncoderSpec(str(tiny_whisper), device="cpu", whisper_mode=mode, max_layer=2))
        assert not lean_applies(enc, waves)
        np.testing.assert_array_equal(embed_layer(enc, waves, 2), enc.encode(waves)[:, 2])


# ------------------------------------------------------------------------------------------ VAD on real speech
@pytest.fixture(scope="module")
def speech_and_silence(emodb_manifest):
    """EmoDB speech with quiet gaps: ``(wave, [(start_s, end_s) of each clip])`` at 16 kHz."""
    rng = np.random.default_rng(0)
    wav = emodb_manifest.parent / "wav"
    parts, spans, t = [], [], 0.0
    for name in ("03a01Fa", "03a02Nc", "03b01Wa"):
        gap = 3.0
        parts.append((0.0005 * rng.normal(size=int(gap * RATE))).astype(np.float32)); t += gap
        clip, rate = sf.read(wav / f"{name}.wav", dtype="float32")
        assert rate == RATE
        parts.append(clip); spans.append((t, t + len(clip) / RATE)); t += len(clip) / RATE
    parts.append(np.zeros(3 * RATE, np.float32))
    return np.concatenate(parts), spans


def test_vad_flags_speech_and_leaves_the_gaps_out(speech_and_silence):
    from probekit.deploy.vad import StreamingVad, VadSpec

    wave, spans = speech_and_silence
    vad = StreamingVad(RATE)
    for lo in range(0, len(wave), 7777):  # odd block sizes: frames straddle blocks
        vad.feed(wave[lo:lo + 7777], last=lo + 7777 >= len(wave))
    assert len(vad.probabilities) == len(wave) // 512
    for s, e in spans:
        assert vad.is_speech(int(s * RATE), int(e * RATE))
    gaps = [(0.2, spans[0][0] - 0.2)] + [(a[1] + 0.3, b[0] - 0.2) for a, b in zip(spans, spans[1:])]
    for s, e in gaps:
        assert not vad.is_speech(int(s * RATE), int(e * RATE)), (s, e)
    # Blocks of frames through the front end, the LSTM over each block in one call: Silero's own frame-by-frame loop.
    import soxr
    import torch

    from probekit.deploy.vad import load_silero

    model = load_silero().jit  # silero's own TorchScript model
    model.reset_states()
    narrow = soxr.resample(wave, RATE, 8000).astype(np.float32)  # the VAD listens at 8 kHz
    with torch.inference_mode():
        one_by_one = np.array([float(model(torch.from_numpy(narrow[i:i + 256]), 8000)) for i in range(0, len(narrow) - 255, 256)])
    assert len(vad.probabilities) == len(one_by_one)
    print(f"max abs difference to frame by frame: {np.abs(vad.probabilities - one_by_one).max():.1e}")
    np.testing.assert_allclose(vad.probabilities, one_by_one, atol=1e-4)
    assert np.array_equal(vad.probabilities >= 0.5, one_by_one >= 0.5)
    # The threshold is a real option: at 0.999 far less of the speech counts.
    strict = StreamingVad(RATE, VadSpec(threshold=0.999))
    strict.feed(wave, last=True)
    s, e = spans[0]
    assert strict.speech_seconds(int(s * RATE), int(e * RATE)) < 0.9 * vad.speech_seconds(int(s * RATE), int(e * RATE))


def test_vad_options_are_checked():
    from probekit.deploy.vad import StreamingVad, VadError, VadSpec
    from probekit.errors import ProbekitError

    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(VadError, match="vad-threshold"):
            VadSpec(threshold=bad)
    with pytest.raises(VadError, match="22050"):
        StreamingVad(22050)
    assert issubclass(VadError, ProbekitError)


def test_a_silero_model_laid_out_otherwise_is_refused():
    import torch

    from probekit.deploy.vad import SileroVad, VadError, load_silero

    with pytest.raises(VadError, match="silero-vad"):
        SileroVad(object())  # no 8 kHz submodule at all

    class Drifted:
        """The real 8 kHz parts, but a frame-by-frame forward that disagrees with them."""

        _model_8k = load_silero().jit._model_8k

        def reset_states(self):
            pass

        def __call__(self, x, rate):
            return torch.full((1, 1), 0.5)

    with pytest.raises(VadError, match="differ"):
        SileroVad(Drifted())


def test_the_vad_check_survives_python_O():
    """The load-time check is a raise, not an assert, so `python -O` still refuses a disagreeing model."""
    import subprocess
    import sys

    code = """
import torch
from probekit.deploy.vad import SileroVad, VadError, load_silero
class Drifted:
    _model_8k = load_silero().jit._model_8k
    def reset_states(self): pass
    def __call__(self, x, rate): return torch.full((1, 1), 0.5)
try:
    SileroVad(Drifted())
except VadError as exc:
    print("refused:", exc)
else:
    print("accepted")
"""
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "differ" in out.stdout, out.stdout


def test_loading_the_vad_keeps_torch_threads():
    import torch

    from probekit.deploy.vad import load_silero

    before = torch.get_num_threads()
    load_silero()
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------ timeline CSV, channels, bad input
@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("m")
    cache, _ = build_cache(root / "c.h5")
    return export_probe(cache, 1, root / "m", task="multiclass", target="label", probe="logreg", evaluate=False)


def test_non_speech_windows_are_written_but_never_scored(model, tmp_path, speech_and_silence):
    wave, spans = speech_and_silence
    sf.write(tmp_path / "call.wav", wave, RATE)
    enc = SpectralEncoder()
    tl = load_scorer(model, encoder=enc).timeline(tmp_path / "call.wav", 1.0, 1.0, csv_path=tmp_path / "c.csv",
                                                   png_path=tmp_path / "c.png")
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert len(rows) == len(tl.start) and {r["speech"] for r in rows} == {"0", "1"}
    for r, s in zip(rows, tl.speech):
        assert (r["speech"] == "1") == bool(s)
        assert (r["p_high"] == "") == (not s)
    assert np.isnan(tl.probabilities[~tl.speech]).all() and not tl.decisions[~tl.speech].any()
    assert not np.isnan(tl.probabilities[tl.speech]).any()
    # Only speech windows reached the encoder.
    assert enc.calls >= 1 and enc.max_batch_samples <= int(tl.speech.sum()) * RATE
    inside = [any(a <= s and e <= b for a, b in spans) for s, e in zip(tl.start, tl.end)]
    assert all(tl.speech[inside])
    assert (tmp_path / "c.png").stat().st_size > 5000


def test_timeline_channel_selects_one_side(model, tmp_path):
    rng = np.random.default_rng(3)
    high, low = tone(3000, 4.0, rng), tone(300, 4.0, rng)
    sf.write(tmp_path / "two.wav", np.stack([high, low], axis=1), RATE, subtype="FLOAT")
    scorer = load_scorer(model, encoder=SpectralEncoder())
    left = scorer.timeline(tmp_path / "two.wav", 1.0, 1.0, channel=0, vad=None)
    right = scorer.timeline(tmp_path / "two.wav", 1.0, 1.0, channel=1, vad=None)
    assert left.decisions[:, scorer.labels.index("high")].all() and right.decisions[:, scorer.labels.index("low")].all()
    from probekit.extract.audio import AudioError

    with pytest.raises(AudioError, match="channel 2 does not exist"):
        scorer.timeline(tmp_path / "two.wav", 1.0, 1.0, channel=2, vad=None)


@pytest.fixture()
def cli_scorer(monkeypatch):
    import probekit.deploy.scorer as scorer_mod

    real = scorer_mod.load_scorer
    monkeypatch.setattr(scorer_mod, "load_scorer",
                        lambda d, device="auto", fast=False: real(d, device, encoder=SpectralEncoder()))


def test_predict_scores_every_good_input_and_names_every_bad_one(model, tmp_path, cli_scorer):
    rng = np.random.default_rng(4)
    sf.write(tmp_path / "good1.wav", tone(3000, 1.5, rng), RATE)
    sf.write(tmp_path / "good2.wav", tone(300, 1.5, rng), RATE)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(40))
    sf.write(tmp_path / "mono.wav", tone(300, 1.5, rng), RATE)
    (tmp_path / "m.csv").write_text("id,path,channel\nrow_ok,good2.wav,\nrow_gone,gone.wav,\nrow_chan,mono.wav,1\n")
    args = ["predict", str(model), str(tmp_path / "good1.wav"), str(tmp_path / "missing.wav"), str(tmp_path / "corrupt.wav"),
            str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"), "--batch-size", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    rows = list(csv.DictReader(open(tmp_path / "o" / "predictions.csv")))
    assert [r["id"] for r in rows] == [str(tmp_path / "good1.wav"), "row_ok"]
    assert rows[0]["high"] == "1" and rows[1]["low"] == "1"
    assert "4 input(s) could not be scored" in res.output
    assert "missing.wav" in res.output and "audio file not found" in res.output
    assert "corrupt.wav" in res.output and "unreadable" in res.output
    assert "row_gone" in res.output and "line 3" in res.output
    assert "row_chan" in res.output and "channel 1 does not exist" in res.output


def test_timelines_go_on_past_a_bad_call(model, tmp_path, cli_scorer):
    rng = np.random.default_rng(5)
    sf.write(tmp_path / "call.wav", tone(3000, 3.0, rng), RATE)
    res = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "nope.wav"), str(tmp_path / "call.wav"),
                                   "--window", "1", "--hop", "1", "--no-vad", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "nope.wav" in res.output
    assert len(list(csv.DictReader(open(tmp_path / "o" / "call.timeline.csv")))) == 3


def test_ctrl_c_says_what_was_kept(model, tmp_path, cli_scorer, monkeypatch):
    from probekit.deploy.scorer import Scorer

    rng = np.random.default_rng(6)
    for i in range(5):
        sf.write(tmp_path / f"f{i}.wav", tone(300, 1.0, rng), RATE)
    real = Scorer.iter_predict

    def interrupted(self, *a, **k):
        for n, part in enumerate(real(self, *a, **k)):
            if n == 1:
                raise KeyboardInterrupt
            yield part

    monkeypatch.setattr(Scorer, "iter_predict", interrupted)
    res = CliRunner().invoke(app, ["predict", str(model), *(str(tmp_path / f"f{i}.wav") for i in range(5)),
                                   "--batch-size", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 130
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "2 rows" in lines[0]
    assert len(list(csv.DictReader(open(tmp_path / "o" / "predictions.csv")))) == 2


def test_ground_truth_from_a_manifest_is_drawn(model, tmp_path, cli_scorer):
    from probekit.deploy.timeline import truth_for

    rng = np.random.default_rng(7)
    sf.write(tmp_path / "call.wav", np.concatenate([tone(3000, 2.0, rng), tone(300, 2.0, rng)]), RATE)
    sf.write(tmp_path / "other.wav", tone(300, 1.0, rng), RATE)
    (tmp_path / "truth.csv").write_text("id,path,start,end,label,labels\n"
                                        "a,call.wav,0,2,high,high;tonal\nb,call.wav,2,4,low,low\n"
                                        "c,other.wav,0,1,low,low\nd,call.wav,,,low,low\n")
    spans = truth_for(tmp_path / "truth.csv", tmp_path / "call.wav")
    assert [(t.start, t.end, sorted(t.labels)) for t in spans] == [(0.0, 2.0, ["high", "tonal"]), (2.0, 4.0, ["low"])]
    res = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "call.wav"), "--window", "1", "--hop", "1",
                                   "--no-vad", "--truth", str(tmp_path / "truth.csv"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "call.timeline.png").stat().st_size > 5000


def test_an_old_silero_that_imports_torchaudio_is_refused_with_the_upgrade(monkeypatch):
    """silero-vad 6.2.2 and older import torchaudio at the top: the error says to upgrade, not to install it."""
    import builtins

    from probekit.deploy.vad import VadError, load_silero

    real_import = builtins.__import__

    def old_silero(name, *args, **kwargs):
        if name == "silero_vad":
            raise ModuleNotFoundError("No module named 'torchaudio'", name="torchaudio")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", old_silero)
    with pytest.raises(VadError, match=r"older than 6\.2\.3.*silero-vad>=6\.2\.3,<7"):
        load_silero()

    def missing(name, *args, **kwargs):
        if name == "silero_vad":
            raise ModuleNotFoundError("No module named 'silero_vad'", name="silero_vad")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing)
    with pytest.raises(VadError, match="needs the silero-vad package"):
        load_silero()
