"""Encoders on tiny random models built from configs: shapes, batch invariance, truncation, Whisper modes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from probekit.extract.encoders import EncoderError, EncoderSpec, load_encoder, whisper_encoder_hidden_states
from probekit.extract.pooling import pooled_dim

_CONV = dict(conv_dim=(8,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
_BODY = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    layerdrop=0.5,  # must be off in eval mode: results would be random otherwise
    **_CONV,
)
_W2V2_FAMILY = {
    "wav2vec2-layer": lambda: transformers.Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, **_BODY),
    "wav2vec2-group": lambda: transformers.Wav2Vec2Config(feat_extract_norm="group", do_stable_layer_norm=False, **_BODY),
    "hubert": lambda: transformers.HubertConfig(feat_extract_norm="group", do_stable_layer_norm=False, **_BODY),
    "wavlm": lambda: transformers.WavLMConfig(feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=32, **_BODY),
    "data2vec-audio": lambda: transformers.Data2VecAudioConfig(
        **{k: v for k, v in _BODY.items() if not k.startswith("num_conv_pos")},
        num_conv_pos_embedding_groups=2,
        conv_pos_kernel_size=5,
        num_conv_pos_embeddings=2,
    ),
}
_MODEL_CLASS = {
    "wav2vec2-layer": transformers.Wav2Vec2Model,
    "wav2vec2-group": transformers.Wav2Vec2Model,
    "hubert": transformers.HubertModel,
    "wavlm": transformers.WavLMModel,
    "data2vec-audio": transformers.Data2VecAudioModel,
}
# Very different lengths, one pair of equal length (exercises grouped batches for group norm).
_LENGTHS = [400, 16000, 3123, 7001, 16000, 1203]


def _waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def _save_w2v2(name: str, folder: Path, half: bool = False) -> Path:
    torch.manual_seed(0)
    config = _W2V2_FAMILY[name]()
    model = _MODEL_CLASS[name](config)
    if half:
        model = model.half()
    model.save_pretrained(folder)
    layer_norm = getattr(config, "feat_extract_norm", "layer") == "layer"
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=layer_norm).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=sorted(_W2V2_FAMILY))
def w2v2_model(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, _save_w2v2(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def whisper_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=64,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        suppress_tokens=[],
        begin_suppress_tokens=[],
        encoder_layerdrop=0.5,
    )
    folder = tmp_path_factory.mktemp("whisper")
    transformers.WhisperForConditionalGeneration(config).save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def _solo(encoder, waves, pooling="mean"):
    return np.concatenate([encoder.encode([w], pooling) for w in waves])


# ---- wav2vec2 family -----------------------------------------------------------------------


def test_w2v2_shapes_and_identity(w2v2_model):
    name, folder = w2v2_model
    encoder = load_encoder(EncoderSpec(str(folder)))
    assert encoder.num_hidden_states == 3
    assert encoder.hidden_size == 16
    assert encoder.sample_rate == 16000
    assert encoder.min_samples == 400
    assert encoder.pads_safely is (name not in ("wav2vec2-group", "hubert", "data2vec-audio"))
    assert not encoder.model.training
    waves = _waves([400, 5000])
    for pooling in ("mean", "mean+std"):
        out = encoder.encode(waves, pooling)
        assert out.shape == (2, 3, pooled_dim(16, pooling))
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
    ident = encoder.identity
    assert ident["encoder"] == str(folder)
    assert ident["whisper_mode"] == ""
    assert len(ident["commit"]) == 64 and len(ident["config_hash"]) == 64
    assert ident["sample_rate"] == "16000" and ident["device"] == "cpu"


def test_w2v2_receptive_field_is_enforced(w2v2_model):
    encoder = load_encoder(EncoderSpec(str(w2v2_model[1])))
    assert encoder.frames(400) == 1 and encoder.frames(399) == 0
    with pytest.raises(ValueError, match="receptive field"):
        encoder.encode(_waves([399]))


@pytest.mark.parametrize("pooling", ["mean", "mean+std"])
def test_w2v2_batch_invariance(w2v2_model, pooling):
    encoder = load_encoder(EncoderSpec(str(w2v2_model[1])))
    waves = _waves(_LENGTHS)
    batched = encoder.encode(waves, pooling)
    np.testing.assert_allclose(batched, _solo(encoder, waves, pooling), atol=1e-4, rtol=0)
    # Order within the batch does not matter either.
    order = [3, 0, 5, 1, 4, 2]
    np.testing.assert_allclose(encoder.encode([waves[i] for i in order], pooling), batched[order], atol=1e-4, rtol=0)


def test_w2v2_matches_plain_transformers(w2v2_model):
    """Solo vectors equal a direct HF forward pass pooled over the model's own frame count."""
    name, folder = w2v2_model
    encoder = load_encoder(EncoderSpec(str(folder)))
    model = _MODEL_CLASS[name].from_pretrained(folder).eval()
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    wave = _waves([9000])[0]
    with torch.no_grad():
        values = fe(wave, sampling_rate=16000, return_tensors="pt").input_values
        hidden = model(values, output_hidden_states=True).hidden_states
    n = int(model._get_feat_extract_output_lengths(torch.tensor(9000)))
    expected = np.stack([h[0, :n].mean(0).numpy() for h in hidden])
    np.testing.assert_allclose(encoder.encode([wave])[0], expected, atol=1e-5)


@pytest.mark.parametrize("max_layer", [0, 1])
def test_w2v2_truncation(w2v2_model, max_layer):
    folder = str(w2v2_model[1])
    full = load_encoder(EncoderSpec(folder))
    short = load_encoder(EncoderSpec(folder, max_layer=max_layer))
    assert short.num_hidden_states == max_layer + 1
    assert len(short.model.encoder.layers) == max(max_layer, 1)
    waves = _waves([400, 8000, 3000])
    np.testing.assert_allclose(short.encode(waves), full.encode(waves)[:, : max_layer + 1], atol=1e-5)


def test_float16_checkpoint_runs_in_float32(tmp_path):
    folder = _save_w2v2("wav2vec2-layer", tmp_path / "half", half=True)
    encoder = load_encoder(EncoderSpec(str(folder)))
    assert {p.dtype for p in encoder.model.parameters()} == {torch.float32}
    # The same float16 weights, widened before saving, give the same vectors.
    reference = transformers.Wav2Vec2Model.from_pretrained(folder, dtype=torch.float32)
    reference.save_pretrained(tmp_path / "wide")
    transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder).save_pretrained(tmp_path / "wide")
    wide = load_encoder(EncoderSpec(str(tmp_path / "wide")))
    waves = _waves([4000, 9000])
    out = encoder.encode(waves)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, wide.encode(waves), atol=1e-6)
    # Same architecture, different weight files: same config hash, different commit (weights hash).
    assert encoder.identity["config_hash"] == wide.identity["config_hash"]
    assert encoder.identity["commit"] != wide.identity["commit"]


# ---- errors ------------------------------------------------------------------------------


def test_unknown_architecture_is_named(tmp_path):
    transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(EncoderError, match="unsupported architecture 'bert'"):
        load_encoder(EncoderSpec(str(tmp_path)))


def test_missing_checkpoint_is_reported(tmp_path, monkeypatch):
    with pytest.raises(EncoderError, match="no such folder"):
        load_encoder(EncoderSpec(str(tmp_path / "no" / "such" / "model")))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(EncoderError, match="models/whisper-tny: no such folder"):
        load_encoder(EncoderSpec("models/whisper-tny"))


def test_uncached_hub_id_fails_at_once_offline(monkeypatch):
    """Offline, an id not in the local cache stops before transformers tries (and retries) the network."""
    from probekit.extract import encoders

    def no_network(*a, **k):
        raise AssertionError("nothing may touch the network")

    monkeypatch.setattr(encoders.AutoConfig, "from_pretrained", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(encoders, "_hub_reachable", no_network)
    with pytest.raises(EncoderError, match="not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"):
        load_encoder(EncoderSpec("nobody/no-such-model"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(encoders, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(EncoderError, match="the hub cannot be reached"):
        load_encoder(EncoderSpec("nobody/no-such-model"))


def test_bad_options_are_reported(w2v2_model):
    folder = str(w2v2_model[1])
    with pytest.raises(EncoderError, match="max_layer 3"):
        load_encoder(EncoderSpec(folder, max_layer=3))
    with pytest.raises(EncoderError, match="whisper_mode"):
        load_encoder(EncoderSpec(folder, whisper_mode="quick"))
    with pytest.raises(EncoderError, match="device"):
        load_encoder(EncoderSpec(folder, device="tpu"))


# ---- whisper -------------------------------------------------------------------------------


def _hf_whisper_pooled(folder: Path, wave: np.ndarray) -> np.ndarray:
    """Reference: plain HF, one 30 s window at a time, valid frames of all windows pooled together."""
    model = transformers.WhisperModel.from_pretrained(folder).get_encoder().eval()
    fe = transformers.WhisperFeatureExtractor.from_pretrained(folder)
    frames = []
    with torch.no_grad():
        for start in range(0, len(wave), fe.n_samples):
            window = wave[start : start + fe.n_samples]
            feats = fe(window, sampling_rate=16000, return_tensors="pt").input_features
            hidden = model(feats, output_hidden_states=True).hidden_states
            n = math.ceil(len(window) / 320)
            frames.append(torch.stack(hidden)[:, 0, :n])
    return torch.cat(frames, dim=1).mean(dim=1).numpy()


@pytest.mark.parametrize("mode", ["padded", "fast"])
def test_whisper_shapes_and_batch_invariance(whisper_model, mode):
    encoder = load_encoder(EncoderSpec(str(whisper_model), whisper_mode=mode))
    assert encoder.num_hidden_states == 3 and encoder.hidden_size == 16
    assert encoder.identity["whisper_mode"] == mode
    assert encoder.identity["architecture"] == "WhisperForConditionalGeneration"
    assert not hasattr(encoder.model, "decoder")
    waves = _waves([1, 400, 16000, 4321, 48000])
    for pooling in ("mean", "mean+std"):
        batched = encoder.encode(waves, pooling)
        assert batched.shape == (5, 3, pooled_dim(16, pooling))
        np.testing.assert_allclose(batched, _solo(encoder, waves, pooling), atol=1e-4, rtol=0)


def test_whisper_padded_matches_plain_transformers_beyond_30s(whisper_model):
    encoder = load_encoder(EncoderSpec(str(whisper_model)))
    wave = _waves([16000 * 35 + 123], seed=3)[0]  # two windows: 30 s, then 5 s
    expected = _hf_whisper_pooled(whisper_model, wave)
    np.testing.assert_allclose(encoder.encode([wave])[0], expected, atol=1e-5)
    # Pooled over both windows, not just the first one.
    first_only = _hf_whisper_pooled(whisper_model, wave[: 16000 * 30])
    assert np.abs(expected - first_only).max() > 1e-3


def test_whisper_fast_reproduces_hf_hidden_states(whisper_model):
    model = transformers.WhisperModel.from_pretrained(whisper_model).get_encoder().eval()
    torch.manual_seed(1)
    mel = torch.randn(2, 80, 3000)
    with torch.no_grad():
        hf = torch.stack(model(mel, output_hidden_states=True).hidden_states)
        ours = whisper_encoder_hidden_states(model, mel, torch.tensor([3000, 3000]))
    assert ours.shape == hf.shape == (3, 2, 1500, 16)
    torch.testing.assert_close(ours, hf, atol=1e-5, rtol=1e-5)


def test_whisper_fast_equals_padded_on_a_full_window(whisper_model):
    """With 30 s of audio there is no padding, so both modes see the same input."""
    wave = _waves([16000 * 30], seed=5)
    padded = load_encoder(EncoderSpec(str(whisper_model))).encode(wave, "mean+std")
    fast = load_encoder(EncoderSpec(str(whisper_model), whisper_mode="fast")).encode(wave, "mean+std")
    np.testing.assert_allclose(fast, padded, atol=1e-4)


@pytest.mark.parametrize("mode", ["padded", "fast"])
@pytest.mark.parametrize("max_layer", [0, 1])
def test_whisper_truncation(whisper_model, mode, max_layer):
    full = load_encoder(EncoderSpec(str(whisper_model), whisper_mode=mode))
    short = load_encoder(EncoderSpec(str(whisper_model), whisper_mode=mode, max_layer=max_layer))
    assert short.num_hidden_states == max_layer + 1
    assert len(short.model.layers) == max(max_layer, 1)
    waves = _waves([3000, 20000])
    np.testing.assert_allclose(short.encode(waves), full.encode(waves)[:, : max_layer + 1], atol=1e-5)


def test_whisper_fast_matches_numpy_extractor_features(whisper_model):
    """Fast mode's torch features give the vectors the numpy extractor's features give (as the
    pre-torch code computed them: clip zero-padded past its last frame, mel cut to 2n frames)."""
    encoder = load_encoder(EncoderSpec(str(whisper_model), whisper_mode="fast"))
    fe = transformers.WhisperFeatureExtractor.from_pretrained(whisper_model)
    waves = _waves([1, 4321, 16000 * 7 + 5], seed=7)
    expected = []
    for wave in waves:
        n = math.ceil(len(wave) / 320)
        padded = np.zeros(n * 320 + fe.n_fft, dtype=np.float32)
        padded[: len(wave)] = wave
        mel = fe(padded, sampling_rate=16000, padding="longest", return_tensors="pt").input_features[:, :, : 2 * n]
        with torch.no_grad():
            hidden = whisper_encoder_hidden_states(encoder.model, mel, torch.tensor([2 * n]))
        expected.append(hidden[:, 0, :n].mean(1).numpy())
    np.testing.assert_allclose(encoder.encode(waves), np.stack(expected), atol=1e-5)
