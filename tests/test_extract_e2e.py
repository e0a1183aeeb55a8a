"""End to end with real (tiny, random) transformers encoders: CLI -> HDF5 -> EmbeddingCache, and
each stored vector equals the encoder run on that segment alone."""

from __future__ import annotations

import numpy as np
import pytest
from fake_encoder import write_corpus
from typer.testing import CliRunner

encoders = pytest.importorskip("probekit.extract.encoders", reason="probekit.extract.encoders is not in this tree yet")
transformers = pytest.importorskip("transformers")

from probekit.extract.audio import load_segment  # noqa: E402
from probekit.cache import EmbeddingCache  # noqa: E402
from probekit.cli import app  # noqa: E402
from probekit.manifest import read_manifest  # noqa: E402


def _tiny_whisper(folder):
    cfg = transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=16, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=1500,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    transformers.WhisperForConditionalGeneration(cfg).save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def _tiny_wav2vec2(folder):
    cfg = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(16, 16),
        conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="group", do_stable_layer_norm=False, vocab_size=8,
    )
    transformers.Wav2Vec2Model(cfg).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True).save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("build", [_tiny_whisper, _tiny_wav2vec2], ids=["whisper", "wav2vec2"])
def test_cli_extract_real_tiny_encoder(tmp_path, build, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = build(tmp_path / "model")
    manifest = write_corpus(tmp_path / "data", n=6)
    res = CliRunner().invoke(app, ["extract", str(manifest), "--model", str(model), "--out", str(tmp_path / "out"),
                                   "--dtype", "float32", "--device", "cpu", "--batch-seconds", "3", "-q"])
    assert res.exit_code == 0, res.output
    cache = EmbeddingCache(tmp_path / "out" / "model.h5")
    assert (len(cache), cache.num_layers, cache.dim) == (6, 3, 16)
    enc = encoders.load_encoder(encoders.EncoderSpec(model=str(model), device="cpu"))
    assert cache.attrs["config_hash"] == enc.identity["config_hash"]
    m = read_manifest(manifest)
    for k, seg in enumerate(m.segments):
        alone = enc.encode([load_segment(seg.path, seg.start, seg.end, enc.sample_rate, enc.min_samples)])[0]
        stored = np.stack([cache.read_layer(i, rows=np.array([k]))[0] for i in range(cache.num_layers)])
        np.testing.assert_allclose(stored, alone, atol=1e-4)


@pytest.mark.slow
def test_real_whisper_on_part_of_emodb(tmp_path, whisper_tiny, emodb_manifest, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    lines = emodb_manifest.read_text().splitlines()
    part = tmp_path / "emodb8.csv"
    # Absolute paths: the part manifest lives elsewhere than the audio.
    body = [",".join([r.split(",")[0], str(emodb_manifest.parent / r.split(",")[1]), *r.split(",")[2:]]) for r in lines[1:9]]
    part.write_text("\n".join([lines[0], *body]) + "\n")
    res = CliRunner().invoke(app, ["extract", str(part), "--model", str(whisper_tiny), "--out", str(tmp_path),
                                   "--dtype", "float32", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    cache = EmbeddingCache(tmp_path / "whisper-tiny.en.h5")
    assert (len(cache), cache.num_layers, cache.dim) == (8, 5, 384)
    assert list(cache.ids) == [r.split(",")[0] for r in lines[1:9]]
    assert list(cache.metadata["label"]) == [r.split(",")[3] for r in lines[1:9]]
    assert cache.attrs["whisper_mode"] == "padded" and cache.attrs["encoder"] == str(whisper_tiny)
    layer2 = cache.read_layer(2)
    assert np.isfinite(layer2).all() and np.linalg.norm(layer2, axis=1).min() > 0
