"""Pooling on the device: masked statistics over valid frames, windows of one segment pooled together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probekit.extract.pooling import POOLINGS, pool_hidden, pooled_dim


def test_pooled_dim():
    assert pooled_dim(384, "mean") == 384
    assert pooled_dim(384, "mean+std") == 768
    with pytest.raises(ValueError, match="mean\\+std"):
        pooled_dim(384, "max")


def _expected(frames: np.ndarray, pooling: str) -> np.ndarray:
    """(states, n, dim) -> (states, pooled_dim), in float64 numpy."""
    mean = frames.astype(np.float64).mean(axis=1)
    if pooling == "mean":
        return mean
    return np.concatenate([mean, frames.astype(np.float64).std(axis=1)], axis=1)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_masked_windows_pool_like_their_concatenation(pooling):
    """Segment 0 is three windows (100, 1 and 56 valid frames), segment 1 one window of 7;
    padding frames hold huge values and must not leak in."""
    rng = np.random.default_rng(0)
    seg0 = rng.normal(3.0, 2.0, size=(3, 157, 8)).astype(np.float32)
    seg1 = rng.normal(-1.0, 0.5, size=(3, 7, 8)).astype(np.float32)
    windows = [seg0[:, :100], seg0[:, 100:101], seg1, seg0[:, 101:]]
    owner = [0, 0, 1, 0]
    hidden = np.full((3, 4, 120, 8), 1e30, dtype=np.float32)
    for k, w in enumerate(windows):
        hidden[:, k, : w.shape[1]] = w
    frames = torch.tensor([w.shape[1] for w in windows])
    out = pool_hidden(torch.from_numpy(hidden), frames, torch.tensor(owner), 2, pooling).numpy()
    assert out.dtype == np.float32 and out.shape == (2, 3, pooled_dim(8, pooling))
    np.testing.assert_allclose(out[0], _expected(seg0, pooling), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], _expected(seg1, pooling), rtol=1e-5, atol=1e-5)


def test_std_has_no_cancellation():
    """A large mean with a tiny spread: E[x^2] - E[x]^2 in float32 would lose it entirely."""
    rng = np.random.default_rng(1)
    frames = (1000.0 + 1e-3 * rng.standard_normal((2, 500, 4))).astype(np.float32)
    out = pool_hidden(torch.from_numpy(frames[:, None]), torch.tensor([500]), pooling="mean+std").numpy()[0]
    np.testing.assert_allclose(out[:, 4:], frames.astype(np.float64).std(axis=1), rtol=2e-2)


def test_single_frame_std_is_zero():
    frames = torch.full((2, 1, 3, 4), 7.5)
    out = pool_hidden(frames, torch.tensor([1]), pooling="mean+std")[0]
    torch.testing.assert_close(out[:, :4], torch.full((2, 4), 7.5))
    torch.testing.assert_close(out[:, 4:], torch.zeros(2, 4))


def test_half_precision_input_and_empty_segment():
    hidden = torch.randn(2, 2, 5, 4).half()
    out = pool_hidden(hidden, torch.tensor([5, 2]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[1], hidden[:, 1, :2].float().mean(1))
    with pytest.raises(ValueError, match="no valid frame"):
        pool_hidden(hidden, torch.tensor([5, 0]))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_non_finite_padding_is_dropped(pooling):
    """Padding that overflowed (inf, NaN) must not reach the pooled vectors: 0 x inf is NaN, so the
    fast masked product must give way to zeroing the padding first."""
    rng = np.random.default_rng(2)
    valid = rng.normal(size=(2, 3, 6, 4)).astype(np.float32)
    hidden = valid.copy()
    hidden[:, 0, 4:] = np.inf
    hidden[:, 1, 2:] = np.nan
    frames = [4, 2, 6]
    out = pool_hidden(torch.from_numpy(hidden), torch.tensor(frames), pooling=pooling).numpy()
    assert np.isfinite(out).all()
    for w, n in enumerate(frames):
        np.testing.assert_allclose(out[w], _expected(valid[:, w, :n], pooling), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_unstacked_states_pool_like_the_stacked_tensor(pooling):
    """A model's hidden states as it returns them (one tensor per state, longer than the valid
    frames) pool like their stacked first max(frames) frames."""
    g = torch.Generator().manual_seed(3)
    states = [torch.randn(3, 50, 8, generator=g) for _ in range(4)]
    frames, owner = torch.tensor([7, 30, 12]), torch.tensor([0, 1, 0])
    stacked = torch.stack([h[:, :30] for h in states])
    torch.testing.assert_close(pool_hidden(states, frames, owner, 2, pooling), pool_hidden(stacked, frames, owner, 2, pooling))


def test_pooling_stays_float32_under_autocast():
    """The encoder pools inside its autocast context (float16 on CUDA); the masked product must not
    drop to half precision there. CPU autocast to bfloat16 would show it: bfloat16 keeps 3 digits."""
    g = torch.Generator().manual_seed(4)
    hidden = 100.0 + torch.randn(3, 2, 40, 16, generator=g)
    frames = torch.tensor([40, 25])
    plain = pool_hidden(hidden, frames, pooling="mean+std")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = pool_hidden(hidden, frames, pooling="mean+std")
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, plain, rtol=1e-6, atol=1e-5)
