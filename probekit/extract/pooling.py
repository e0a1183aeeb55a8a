"""Pooling of frame-level hidden states into one vector per layer, where the model ran.

Pooling is over valid frames only (frames that carry audio, never batch padding). A segment that
an encoder covers with several windows (Whisper beyond 30 s) is pooled over all its windows'
frames together, as if they were one sequence. Everything stays on the encoder's device: only
``(segments, layers, dim)`` is ever copied to the host, never layers x frames x dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probekit.choices import Pooling

POOLINGS = Pooling.names()


def pooled_dim(hidden_size: int, pooling: str) -> int:
    """Length of one pooled vector: ``hidden_size`` for mean, twice that for mean+std (mean first)."""
    Pooling.check(pooling, "pooling")
    return hidden_size * (2 if pooling == "mean+std" else 1)


def pool_hidden(
    hidden: torch.Tensor | Sequence[torch.Tensor],
    frames: torch.Tensor,
    owner: torch.Tensor | None = None,
    n_segments: int | None = None,
    pooling: str = "mean",
) -> torch.Tensor:
    """Masked mean (and standard deviation) of every hidden state, per segment.

    hidden: ``(num_hidden_states, n_windows, n_frames, hidden_size)``, any float dtype, or a
    sequence of ``num_hidden_states`` tensors ``(n_windows, >= max(frames), hidden_size)`` (a
    model's hidden states as it returns them: only their first ``max(frames)`` frames are read,
    and nothing is stacked or copied).
    frames: ``(n_windows,)`` valid frames of each window (its first ``frames[i]``; the rest is padding).
    owner: ``(n_windows,)`` the segment each window belongs to, ``0 .. n_segments - 1``
    (default: window ``i`` is segment ``i``).
    Returns ``(n_segments, num_hidden_states, pooled_dim)`` float32 on ``hidden``'s device:
    the mean, then for mean+std the population standard deviation (ddof=0), computed as the mean
    of squared deviations from the segment's mean (two passes: no cancellation).
    """
    Pooling.check(pooling, "pooling")
    states = list(hidden)  # views along the first axis of a stacked tensor: no copy
    windows, size = int(states[0].shape[0]), int(states[0].shape[-1])
    device = states[0].device
    frames = frames.to(device)
    if owner is None:
        owner = torch.arange(windows, device=device)
        n_segments = windows
    owner = owner.to(device)
    n_segments = int(n_segments if n_segments is not None else int(owner.max()) + 1)
    counts = torch.zeros(n_segments, device=device).index_add_(0, owner, frames.float())
    if bool((counts == 0).any()):
        raise ValueError("a segment has no valid frame: it needs at least one to be pooled")
    steps = int(frames.max())
    valid = torch.arange(steps, device=device)[None, :] < frames[:, None]
    views = [h[:, :steps].float() for h in states]
    sums = _segment_sums(views, valid, owner, n_segments)
    mean = sums / counts[None, :, None]
    if pooling == "mean":
        return mean.permute(1, 0, 2).contiguous()
    squares = [(h - m[owner, None, :]).square_() for h, m in zip(views, mean)]
    std = torch.sqrt(_segment_sums(squares, valid, owner, n_segments) / counts[None, :, None])
    return torch.cat([mean, std], dim=-1).permute(1, 0, 2).contiguous()


def _segment_sums(views: list[torch.Tensor], valid: torch.Tensor, owner: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Sum of each state's valid frames per segment: ``(len(views), n_segments, hidden_size)`` float32.

    views: each ``(n_windows, n_frames, hidden_size)`` float32; valid: ``(n_windows, n_frames)`` bool.
    A batched product with the 0/1 mask reads each state once and copies nothing; but 0 times an
    infinite or NaN padding frame (a half-precision overflow) is NaN, so a non-finite result is
    recomputed with the padding zeroed first, which drops such frames as it should.
    """
    weights = valid.to(views[0].dtype)[:, None, :]
    # Autocast would run the product in half precision (the sums of 1500 frames lose digits and
    # can overflow); pooling stays in float32 whatever the forward pass ran in.
    with torch.autocast(views[0].device.type, enabled=False):
        per_window = torch.stack([torch.bmm(weights, h).squeeze(1) for h in views])
    if not bool(torch.isfinite(per_window).all()):
        per_window = torch.stack([h.masked_fill(~valid[:, :, None], 0.0).sum(dim=1) for h in views])
    return torch.zeros(len(views), n_segments, per_window.shape[-1], device=per_window.device).index_add_(1, owner, per_window)
