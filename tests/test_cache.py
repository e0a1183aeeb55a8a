"""The cache contract: round trip, layer-only reads, atomic finalisation, shard merging."""

from __future__ import annotations

import numpy as np
import pytest

from probekit.cache import CacheError, CacheWriter, EmbeddingCache, merge_shards, write_cache


def _cache(tmp_path, name="c.h5", n=12, layers=3, dim=5, dtype="float32", seed=0, prefix="s"):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, layers, dim)).astype(np.float32)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    meta = {"speaker": [f"spk{i % 3}" for i in range(n)], "label": ["anger" if i % 2 else "neutral" for i in range(n)]}
    path = write_cache(tmp_path / name, ids, emb, meta, {"encoder": "toy", "pooling": "mean"}, durations=np.arange(n, dtype=np.float32), dtype=dtype)
    return path, ids, emb, meta


def test_round_trip_float32(tmp_path):
    path, ids, emb, meta = _cache(tmp_path)
    c = EmbeddingCache(path)
    assert list(c.ids) == ids
    assert (c.num_layers, len(c), c.dim) == (3, 12, 5)
    for layer in range(3):
        np.testing.assert_array_equal(c.read_layer(layer), emb[:, layer])
    assert list(c.metadata["label"]) == meta["label"]
    np.testing.assert_array_equal(c.durations, np.arange(12))
    assert c.attrs["encoder"] == "toy" and c.attrs["schema_version"] == 1
    assert len(c.fingerprint) == 64


def test_float16_storage_and_dtype_passthrough(tmp_path):
    path, _, emb, _ = _cache(tmp_path, dtype="float16")
    c = EmbeddingCache(path)
    assert c.read_layer(1, dtype=None).dtype == np.float16
    np.testing.assert_allclose(c.read_layer(1), emb[:, 1], atol=2e-3)


def test_read_rows_gives_every_hidden_state_of_the_rows_in_the_stored_dtype(tmp_path):
    path, _, emb, _ = _cache(tmp_path, dtype="float16")
    c = EmbeddingCache(path)
    rows = np.array([1, 4, 5, 11])
    got = c.read_rows(rows)
    assert got.shape == (4, 3, 5) and got.dtype == np.float16 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, emb[rows].astype(np.float16))
    np.testing.assert_array_equal(c.read_rows(), emb.astype(np.float16))


def test_out_of_range_layer_names_the_range(tmp_path):
    path, *_ = _cache(tmp_path)
    with pytest.raises(IndexError, match="0..2"):
        EmbeddingCache(path).read_layer(3)


def test_unfinished_writer_leaves_no_cache(tmp_path):
    w = CacheWriter(tmp_path / "x.h5", ["a", "b"], 2, 3)
    w.write_rows(np.array([0]), np.zeros((1, 2, 3)), np.zeros(1))
    with pytest.raises(CacheError, match="never written"):
        w.finalize({"speaker": ["p", "q"]}, {})
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.tmp").exists()
    with pytest.raises(CacheError, match="not found"):
        EmbeddingCache(tmp_path / "x.h5")


def test_fingerprint_tracks_content(tmp_path):
    a, *_ = _cache(tmp_path, "a.h5", seed=0)
    b, *_ = _cache(tmp_path, "b.h5", seed=0)
    c, *_ = _cache(tmp_path, "c.h5", seed=1)
    assert EmbeddingCache(a).fingerprint == EmbeddingCache(b).fingerprint != EmbeddingCache(c).fingerprint


def test_merge_shards_restores_order(tmp_path):
    p1, ids1, emb1, _ = _cache(tmp_path, "s1.h5", n=5, seed=1, prefix="a")
    p2, ids2, emb2, _ = _cache(tmp_path, "s2.h5", n=4, seed=2, prefix="b")
    order = [ids2[0], ids1[3], ids1[0], ids2[3], ids2[1], ids2[2], ids1[1], ids1[2], ids1[4]]
    out = merge_shards([p1, p2], tmp_path / "m.h5", order=order)
    m = EmbeddingCache(out)
    assert list(m.ids) == order
    lookup = {**{i: emb1[k] for k, i in enumerate(ids1)}, **{i: emb2[k] for k, i in enumerate(ids2)}}
    for layer in range(3):
        np.testing.assert_array_equal(m.read_layer(layer), np.stack([lookup[i][layer] for i in order]))


def test_merge_refuses_mixed_encoders(tmp_path):
    p1, *_ = _cache(tmp_path, "s1.h5", prefix="a")
    rng = np.random.default_rng(0)
    p2 = write_cache(tmp_path / "s2.h5", ["z"], rng.standard_normal((1, 3, 5)), {"speaker": ["x"], "label": ["y"]}, {"encoder": "other", "pooling": "mean"}, dtype="float32")
    with pytest.raises(CacheError, match="encoder"):
        merge_shards([p1, p2], tmp_path / "m.h5")


def test_golden_v1_cache_keeps_loading():
    """A cache written by schema version 1 (tests/golden/cache_v1.h5) must stay readable, content and all.

    Its embeddings are float16 of a standard normal drawn with seed 20261124; regenerating them here
    means the check does not just compare the reader with itself.
    """
    from pathlib import Path

    golden = Path(__file__).parent / "golden" / "cache_v1.h5"
    c = EmbeddingCache(golden)
    expected = np.random.default_rng(20261124).standard_normal((6, 3, 4)).astype(np.float32).astype(np.float16)
    assert (c.num_layers, len(c), c.dim) == (3, 6, 4)
    assert list(c.ids) == [f"seg{i}" for i in range(6)]
    for layer in range(3):
        np.testing.assert_array_equal(c.read_layer(layer, dtype=None), expected[:, layer])
    assert list(c.metadata["speaker"]) == ["a", "a", "b", "b", "c", "c"]
    assert list(c.metadata["labels"])[:2] == ["anger;negative", "neutral"]
    np.testing.assert_array_equal(c.durations, np.arange(1, 7))
    assert c.skipped == [{"id": "seg_bad", "line": 9, "reason": "silent: peak amplitude 0 is below 1e-04"}]
    assert c.attrs["schema_version"] == 1 and c.attrs["pooling"] == "mean" and c.encoder == "golden/toy"
    assert c.fingerprint == "ba5607a9067d1623ae44a1c54acf4b07a3ecf40d82a8d66a227b70485b2a8328"


def test_reading_a_cache_being_written_names_the_writer(tmp_path):
    """While `probekit extract` holds the lock, a reader is told so, with the writer's pid."""
    import os

    from probekit.extract.journal import RunLock

    out = tmp_path / "c.h5"
    with RunLock(out):
        with pytest.raises(CacheError, match=f"being written by `probekit extract` \\(process {os.getpid()}\\)"):
            EmbeddingCache(out)
    with pytest.raises(CacheError, match="cache file not found"):
        EmbeddingCache(out)
