"""Audio decoding: formats, mono downmix, soxr resampling, frame-exact cuts, and each failure reason."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from probekit.extract.audio import AudioError, load_segment, probe_segment, resampled_length


def _tone(rate, seconds, freq=220.0, amp=0.3):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype", [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS")])
def test_formats_decode_to_the_same_signal(tmp_path, fmt, subtype):
    wave = _tone(16000, 0.5)
    path = tmp_path / f"x.{fmt}"
    sf.write(path, wave, 16000, subtype=subtype, format=fmt.upper())
    got = load_segment(path, sample_rate=16000)
    assert got.dtype == np.float32 and got.shape == wave.shape
    # Vorbis is lossy; PCM_16 is exact to quantisation.
    tol = 0.05 if fmt == "ogg" else 1e-4
    assert np.abs(got - wave).max() < tol


def test_mp3_where_libsndfile_supports_it(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    path = tmp_path / "x.mp3"
    sf.write(path, _tone(16000, 1.0), 16000, format="MP3")
    got = load_segment(path, sample_rate=16000)
    assert abs(len(got) - 16000) < 2000 and np.abs(got).max() > 0.1


def test_stereo_is_averaged(tmp_path):
    left, right = _tone(16000, 0.2, 200), _tone(16000, 0.2, 300, amp=0.1)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_segment(tmp_path / "s.wav"), (left + right) / 2, atol=1e-7)


def test_resampled_with_soxr_to_the_encoder_rate(tmp_path):
    wave = _tone(44100, 0.7)
    sf.write(tmp_path / "r.wav", wave, 44100, subtype="FLOAT")
    got = load_segment(tmp_path / "r.wav", sample_rate=16000)
    np.testing.assert_array_equal(got, soxr.resample(wave, 44100, 16000, quality="HQ"))
    assert len(got) == resampled_length(len(wave), 44100, 16000)


@pytest.mark.parametrize("n,src", [(12345, 44100), (7, 48000), (16000, 22050), (999, 8000), (1, 32000)])
def test_resampled_length_matches_soxr(n, src):
    assert resampled_length(n, src, 16000) == len(soxr.resample(np.ones(n, np.float32), src, 16000))


def test_cut_reads_exact_frames(tmp_path):
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    sf.write(tmp_path / "c.wav", wave, 16000, subtype="FLOAT")
    got = load_segment(tmp_path / "c.wav", start=0.25, end=0.5)
    np.testing.assert_array_equal(got, wave[4000:8000])
    np.testing.assert_array_equal(load_segment(tmp_path / "c.wav", start=0.75), wave[12000:])
    info = probe_segment(tmp_path / "c.wav", 0.25, 0.5)
    assert (info.first_frame, info.num_frames, info.sample_rate) == (4000, 4000, 16000)


def _reason(path, **kw):
    with pytest.raises(AudioError) as info:
        load_segment(path, **kw)
    return info.value.reason


def test_failure_reasons(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + bytes(64))
    assert "unreadable" in _reason(tmp_path / "junk.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    assert "empty" in _reason(tmp_path / "empty.wav")
    sf.write(tmp_path / "full.wav", _tone(16000, 1.0), 16000)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    assert "truncated" in _reason(tmp_path / "cut.wav")
    sf.write(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000)
    assert "silent" in _reason(tmp_path / "quiet.wav")
    assert "too short" in _reason(tmp_path / "full.wav", end=0.01, min_samples=400)
    assert "past the end" in _reason(tmp_path / "full.wav", start=0.5, end=3.0)
    assert "past the end" in _reason(tmp_path / "full.wav", start=2.0)
    # An end rounded just past the last frame is still fine.
    assert len(load_segment(tmp_path / "full.wav", start=0.5, end=1.0002)) == 8000
