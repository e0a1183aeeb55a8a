"""Extraction through the torch feature path: decoding threads, the padded-window batch bound,
stage timings; vectors equal to one-by-one encoding and independent of the number of workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from fake_encoder import FakeEncoder, write_corpus

from probekit.cache import EmbeddingCache
from probekit.extract._extract import STAGES, extract_cache, format_profile
from probekit.extract.audio import load_segment
from probekit.extract.encoders import EncoderSpec, load_encoder
from probekit.manifest import read_manifest


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64, decoder_start_token_id=1, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, suppress_tokens=[], begin_suppress_tokens=[],
    )
    folder = tmp_path_factory.mktemp("whisper")
    transformers.WhisperForConditionalGeneration(config).save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("data"), n=10)


def _bytes(path):
    c = EmbeddingCache(path)
    return [c.read_layer(i, dtype=None).tobytes() for i in range(c.num_layers)], list(c.ids)


@pytest.mark.parametrize("mode", ["padded", "fast"])
def test_whisper_extraction_equals_one_by_one_and_ignores_workers(whisper_folder, corpus, tmp_path, mode):
    enc = load_encoder(EncoderSpec(str(whisper_folder), whisper_mode=mode, device="cpu"))
    calls = []
    original = enc.encode_padded

    def counting(batch, lengths, pooling="mean"):
        calls.append(len(lengths))
        return original(batch, lengths, pooling)

    enc.encode_padded = counting
    # 60 s of what the encoder processes: padded mode fits two 30 s windows; fast mode is bounded
    # by the clips' own lengths (0.3-1.5 s), so only the 25 % length buckets split it.
    one = extract_cache(corpus, enc, tmp_path / "w1.h5", pooling="mean+std", dtype="float32", batch_seconds=60,
                        progress=False, workers=1)
    assert max(calls) == 2 if mode == "padded" else max(calls) > 2
    many = extract_cache(corpus, enc, tmp_path / "w4.h5", pooling="mean+std", dtype="float32", batch_seconds=60,
                         progress=False, workers=4)
    assert _bytes(one.path) == _bytes(many.path)
    cache = EmbeddingCache(one.path)
    emb = np.stack([cache.read_layer(i) for i in range(cache.num_layers)], axis=1)
    for k, seg in enumerate(read_manifest(corpus).segments):
        wave = load_segment(seg.path, seg.start, seg.end, 16000)
        np.testing.assert_allclose(emb[k], enc.encode([wave], "mean+std")[0], atol=1e-5)
    assert set(STAGES) <= set(one.timings) and one.timings["forward"] > 0 and one.timings["features"] > 0
    assert abs(sum(one.timings[s] for s in STAGES) - one.wall_seconds) < 1e-6 + 0.01 * one.wall_seconds
    assert one.peak_rss > 0 and "forward" in format_profile(one) and "peak memory" in format_profile(one)


def test_workers_do_not_change_the_file_with_a_numpy_encoder(corpus, tmp_path):
    a = extract_cache(corpus, FakeEncoder(), tmp_path / "a.h5", dtype="float32", batch_seconds=1.0, progress=False, workers=1)
    b = extract_cache(corpus, FakeEncoder(), tmp_path / "b.h5", dtype="float32", batch_seconds=1.0, progress=False, workers=5)
    assert _bytes(a.path) == _bytes(b.path)
    assert a.timings["forward"] == 0.0 and a.timings["decode_threads"] > 0


def test_workers_must_be_positive(corpus, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        extract_cache(corpus, FakeEncoder(), tmp_path / "a.h5", progress=False, workers=0)


def test_cpu_encoder_leaves_torch_threads_as_it_found_them(whisper_folder):
    """Features and pooling run on one thread on a CPU; the caller's thread count comes back."""
    enc = load_encoder(EncoderSpec(str(whisper_folder), whisper_mode="padded", device="cpu"))
    before = torch.get_num_threads()
    seen = []
    padded = enc.log_mel.padded
    enc.log_mel.padded = lambda *a: seen.append(torch.get_num_threads()) or padded(*a)
    try:
        torch.set_num_threads(2)
        enc.encode([np.ones(8000, np.float32) * 0.1], "mean")
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
