"""Pooling: frame-weighted statistics over valid frames, window by window."""

from __future__ import annotations

import numpy as np
import pytest

from probekit.extract.pooling import POOLINGS, PoolAccumulator, pool_frames, pooled_dim


def test_pooled_dim():
    assert pooled_dim(384, "mean") == 384
    assert pooled_dim(384, "mean+std") == 768
    with pytest.raises(ValueError, match="mean\\+std"):
        pooled_dim(384, "max")


@pytest.mark.parametrize("pooling", POOLINGS)
def test_windows_pool_like_their_concatenation(pooling):
    rng = np.random.default_rng(0)
    frames = rng.normal(3.0, 2.0, size=(3, 157, 8)).astype(np.float32)
    acc = PoolAccumulator(3, 8, pooling)
    for start, stop in [(0, 100), (100, 101), (101, 157)]:
        acc.add(frames[:, start:stop])
    expected = frames.mean(axis=1)
    if pooling == "mean+std":
        expected = np.concatenate([expected, frames.std(axis=1)], axis=1)
    result = acc.result()
    assert result.dtype == np.float32
    assert result.shape == (3, pooled_dim(8, pooling))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pool_frames(frames, pooling), expected, rtol=1e-5, atol=1e-5)


def test_single_frame_std_is_zero():
    frames = np.full((2, 1, 4), 7.5, dtype=np.float32)
    result = pool_frames(frames, "mean+std")
    np.testing.assert_array_equal(result[:, :4], 7.5)
    np.testing.assert_array_equal(result[:, 4:], 0.0)


def test_empty_and_misshapen_input_raise():
    acc = PoolAccumulator(2, 4)
    with pytest.raises(ValueError, match="no frames"):
        acc.result()
    with pytest.raises(ValueError, match="num_hidden_states"):
        acc.add(np.zeros((3, 5, 4)))
