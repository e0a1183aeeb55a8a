"""Whisper log-mel in torch equals WhisperFeatureExtractor's; wav2vec2 normalisation equals its extractor's."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers

from probekit.extract.features import pad_waves
from probekit.extract.features import WhisperLogMel, normalize_waves

# Edge lengths: 1 sample, under one STFT window, just past it, a hop boundary, and the 30 s
# window itself, one short of it and near it (where the window's end reflection touches audio).
_LENGTHS = [1, 150, 401, 16000, 16160, 47999, 479800, 479999, 480000]


def _waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    # Loud and quiet rows in one batch: the max - 8 clamp must stay per row.
    return [(rng.choice([1e-3, 0.3]) * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def _extractors(tmp_path):
    yield "random-128-mels", transformers.WhisperFeatureExtractor(feature_size=128)
    yield "random-80-mels", transformers.WhisperFeatureExtractor(feature_size=80)


def _check_padded(fe, waves):
    ours = WhisperLogMel.from_feature_extractor(fe)
    batch, lengths = pad_waves(waves)
    got = ours.padded(batch, lengths).numpy()
    # The reference pads each clip to the 30 s window on its own, numpy path.
    ref = fe(waves, sampling_rate=16000, padding="max_length", return_tensors="np").input_features
    assert got.shape == ref.shape == (len(waves), fe.feature_size, 3000)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)
    return got, ref


def test_padded_log_mel_equals_the_extractor_random_configs(tmp_path):
    waves = _waves(_LENGTHS)
    for _, fe in _extractors(tmp_path):
        got, _ = _check_padded(fe, waves)
        # Padding frames really are the per-row constant the module's docstring derives.
        short = got[0]
        assert np.ptp(short[:, 10:]) == 0.0


def test_padded_log_mel_equals_the_extractor_real_checkpoint(whisper_tiny, emodb_manifest):
    fe = transformers.WhisperFeatureExtractor.from_pretrained(whisper_tiny)
    files = sorted((emodb_manifest.parent / "wav").glob("*.wav"))[::60]
    waves = [sf.read(f, dtype="float32")[0] for f in files]
    _check_padded(fe, waves)


def test_padded_log_mel_is_batch_invariant():
    fe = transformers.WhisperFeatureExtractor(feature_size=80)
    mel = WhisperLogMel.from_feature_extractor(fe)
    waves = _waves([400, 16000, 33333, 480000], seed=2)
    batch, lengths = pad_waves(waves)
    together = mel.padded(batch, lengths)
    for i, w in enumerate(waves):
        alone = mel.padded(torch.from_numpy(w)[None], [len(w)])
        torch.testing.assert_close(alone[0], together[i], atol=1e-6, rtol=0)


def test_real_frames_equal_the_padded_windows_frames():
    """Fast mode's frames are the padded window's first 2 * ceil(n / 320), clamp included."""
    fe = transformers.WhisperFeatureExtractor(feature_size=80)
    mel = WhisperLogMel.from_feature_extractor(fe)
    waves = _waves([1, 401, 16000, 47999, 200000], seed=3)
    batch, lengths = pad_waves(waves)
    mel_lengths = [2 * -(-n // 320) for n in lengths]
    fast = mel.real_frames(batch, lengths, mel_lengths).numpy()
    padded = mel.padded(batch, lengths).numpy()
    assert fast.shape == (5, 80, max(mel_lengths))
    for i, m in enumerate(mel_lengths):
        np.testing.assert_allclose(fast[i, :, :m], padded[i, :, :m], atol=2e-6, rtol=0)
        assert not fast[i, :, m:].any()


def test_dither_is_refused():
    with pytest.raises(ValueError, match="dither"):
        WhisperLogMel.from_feature_extractor(transformers.WhisperFeatureExtractor(dither=1e-5))


def test_normalize_waves_equals_wav2vec2_extractor():
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    waves = _waves([400, 9000, 12345], seed=4)
    batch, lengths = pad_waves(waves)
    got = normalize_waves(batch, torch.tensor(lengths)).numpy()
    for i, w in enumerate(waves):
        ref = fe(w, sampling_rate=16000, return_tensors="np").input_values[0]
        np.testing.assert_allclose(got[i, : len(w)], ref, atol=1e-5, rtol=1e-5)
        assert not got[i, len(w) :].any()
