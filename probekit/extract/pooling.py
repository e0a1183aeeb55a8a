"""Pooling of frame-level hidden states into one vector per layer, where the model ran.

Pooling is over valid frames only (frames that carry audio, never batch padding). A segment that
an encoder covers with several windows (Whisper beyond 30 s) is pooled over all its windows'
frames together, as if they were one sequence. Everything stays on the encoder's device: only
``(segments, layers, dim)`` is ever copied to the host, never layers x frames x dim.
"""

from __future__ import annotations

import torch

from probekit.choices import Pooling

POOLINGS = Pooling.names()


def check_pooling(pooling: str) -> str:
    """Return ``pooling`` if it is one of :data:`POOLINGS`, else raise ``ValueError`` naming the choices."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    return str(pooling)


def pooled_dim(hidden_size: int, pooling: str) -> int:
    """Length of one pooled vector: ``hidden_size`` for mean, twice that for mean+std (mean first)."""
    check_pooling(pooling)
    return hidden_size * (2 if pooling == "mean+std" else 1)


def pool_hidden(
    hidden: torch.Tensor,
    frames: torch.Tensor,
    owner: torch.Tensor | None = None,
    n_segments: int | None = None,
    pooling: str = "mean",
) -> torch.Tensor:
    """Masked mean (and standard deviation) of every hidden state, per segment.

    hidden: ``(num_hidden_states, n_windows, n_frames, hidden_size)``, any float dtype.
    frames: ``(n_windows,)`` valid frames of each window (its first ``frames[i]``; the rest is padding).
    owner: ``(n_windows,)`` the segment each window belongs to, ``0 .. n_segments - 1``
    (default: window ``i`` is segment ``i``).
    Returns ``(n_segments, num_hidden_states, pooled_dim)`` float32 on ``hidden``'s device:
    the mean, then for mean+std the population standard deviation (ddof=0), computed as the mean
    of squared deviations from the segment's mean (two passes: no cancellation).
    """
    check_pooling(pooling)
    states, windows, steps, size = hidden.shape
    device = hidden.device
    frames = frames.to(device)
    if owner is None:
        owner = torch.arange(windows, device=device)
        n_segments = windows
    owner = owner.to(device)
    n_segments = int(n_segments if n_segments is not None else int(owner.max()) + 1)
    valid = torch.arange(steps, device=device)[None, :] < frames[:, None]
    # masked_fill rather than a product: padding that overflowed in half precision is dropped, not NaN.
    h = hidden.float().masked_fill(~valid[None, :, :, None], 0.0)
    counts = torch.zeros(n_segments, device=device).index_add_(0, owner, frames.float())
    if bool((counts == 0).any()):
        raise ValueError("a segment has no valid frame: it needs at least one to be pooled")
    sums = torch.zeros(states, n_segments, size, device=device).index_add_(1, owner, h.sum(dim=2))
    mean = sums / counts[None, :, None]
    if pooling == "mean":
        return mean.permute(1, 0, 2).contiguous()
    dev = (h - mean[:, owner, None, :]).masked_fill(~valid[None, :, :, None], 0.0)
    sq = torch.zeros_like(sums).index_add_(1, owner, dev.square().sum(dim=2))
    std = torch.sqrt(sq / counts[None, :, None])
    return torch.cat([mean, std], dim=-1).permute(1, 0, 2).contiguous()
