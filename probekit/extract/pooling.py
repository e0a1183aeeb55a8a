"""Pooling of frame-level hidden states into one vector per layer.

Pooling is over valid frames only (frames that carry audio, never batch padding). A segment that
an encoder covers with several windows (Whisper beyond 30 s) is pooled over all its frames
together: :class:`PoolAccumulator` keeps frame-weighted running sums, so adding the windows one
by one gives exactly the statistics of their concatenation.
"""

from __future__ import annotations

import numpy as np

POOLINGS = ("mean", "mean+std")


def check_pooling(pooling: str) -> str:
    """Return ``pooling`` if it is one of :data:`POOLINGS`, else raise ``ValueError`` naming the choices."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    return pooling


def pooled_dim(hidden_size: int, pooling: str) -> int:
    """Length of one pooled vector: ``hidden_size`` for mean, twice that for mean+std (mean first)."""
    check_pooling(pooling)
    return hidden_size * (2 if pooling == "mean+std" else 1)


class PoolAccumulator:
    """Frame-weighted running statistics of one segment, for every hidden state at once.

    Sums are kept in float64 so that a long segment split into many windows loses no precision
    (the variance is derived from the sum of squares).
    """

    def __init__(self, num_hidden_states: int, hidden_size: int, pooling: str = "mean") -> None:
        self.pooling = check_pooling(pooling)
        self.num_hidden_states = num_hidden_states
        self.hidden_size = hidden_size
        self.frames = 0
        self._sum = np.zeros((num_hidden_states, hidden_size), dtype=np.float64)
        self._sumsq = np.zeros_like(self._sum) if pooling == "mean+std" else None

    def add(self, frames: np.ndarray) -> None:
        """Add valid frames of one window: ``frames`` is (num_hidden_states, n_frames, hidden_size)."""
        frames = np.asarray(frames)
        expected = (self.num_hidden_states, self.hidden_size)
        if frames.ndim != 3 or (frames.shape[0], frames.shape[2]) != expected:
            raise ValueError(f"frames must be (num_hidden_states, n_frames, hidden_size) = {expected}, got {frames.shape}")
        frames = frames.astype(np.float64, copy=False)
        self._sum += frames.sum(axis=1)
        if self._sumsq is not None:
            self._sumsq += np.square(frames).sum(axis=1)
        self.frames += frames.shape[1]

    def result(self) -> np.ndarray:
        """Pooled vectors, (num_hidden_states, pooled_dim) float32. Raises if no frame was added."""
        if self.frames == 0:
            raise ValueError("no frames were added: a segment needs at least one valid frame to be pooled")
        mean = self._sum / self.frames
        if self._sumsq is None:
            return mean.astype(np.float32)
        # Population variance (ddof=0); clipped because rounding can leave tiny negatives.
        var = np.maximum(self._sumsq / self.frames - np.square(mean), 0.0)
        return np.concatenate([mean, np.sqrt(var)], axis=1).astype(np.float32)


def pool_frames(frames: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """Pool one window's valid frames: (num_hidden_states, n_frames, hidden) -> (num_hidden_states, pooled_dim)."""
    acc = PoolAccumulator(frames.shape[0], frames.shape[2], pooling)
    acc.add(frames)
    return acc.result()
