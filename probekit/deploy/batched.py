"""One pooled hidden state for a batch of windows, computing only what that pooled vector needs.

Vectors equal ``encoder.encode(waves)[:, layer]`` to float rounding (tests/test_call_windows.py); why each
shortcut is exact is in docs/predict.md, "A faster timeline". Whisper in padded mode never packs two windows
into one 30 s pass (every frame attends to all 1500), and its last kept layer computes outputs only for the
frames the pooling reads, keys and values still from all 1500. Whisper in fast mode runs windows of one length
together with no padding and no mask. With mean pooling, the last layer's (linear) second feed-forward matrix
is applied once to the mean of its input. Every other step is the call :class:`probekit.extract.encoders.Encoder`
makes. wav2vec2-family encoders go through ``encode`` unchanged: a call's windows have one length (only the last
may be shorter), so a batch is already exactly the one-by-one result.
"""

from __future__ import annotations

import contextlib

import numpy as np


def lean_applies(encoder, waves: list[np.ndarray]) -> bool:
    """Whether :func:`embed_layer` can take a lean Whisper path for these waves: a probekit Whisper encoder
    (its padded or fast mode, as ``load_encoder`` checked), every wave within one 30 s window."""
    return (getattr(encoder, "family", "") == "whisper" and getattr(encoder, "spec", None) is not None
            and all(len(w) <= encoder._window_samples for w in waves))


def embed_layer(encoder, waves: list[np.ndarray], layer: int, pooling: str = "mean") -> np.ndarray:
    """Pooled hidden state ``layer`` of each wave: ``(len(waves), pooled_dim)`` float32.

    ``waves``: float32 mono ``(n_samples,)`` at the encoder's rate. Equals
    ``encoder.encode(waves, pooling)[:, layer]`` to float rounding; faster for a Whisper encoder.
    """
    if not waves:
        return np.zeros((0, 0), np.float32)
    if not lean_applies(encoder, waves):
        return np.asarray(encoder.encode(list(waves), pooling=pooling))[:, layer]
    if layer > len(encoder.model.layers):
        raise ValueError(f"hidden state {layer} needs {layer} layers; the encoder kept {len(encoder.model.layers)}")
    run = _whisper_padded_layer if encoder.spec.whisper_mode == "padded" else _whisper_fast_layer
    return _on_cores(encoder, lambda part: run(encoder, part, layer, pooling), list(waves))


def _on_cores(encoder, run, waves: list[np.ndarray]) -> np.ndarray:
    """``run(waves)``, on a CPU split into one contiguous part per torch thread, the parts run side by side with one
    torch thread each; the rows come back in order.

    Windows never interact, so each part is exactly its windows' vectors; one thread per part keeps every core on
    its own matrix products instead of splitting each product (and waiting at its end) across cores.
    """
    import torch

    workers = min(torch.get_num_threads(), len(waves))
    if encoder.device.type != "cpu" or workers < 2:
        return run(waves)
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, len(waves), workers + 1).round().astype(int)
    parts = [waves[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return np.concatenate(list(pool.map(run, parts)))
    finally:
        torch.set_num_threads(threads)


def _autocast(encoder):
    import torch

    return torch.autocast("cuda", dtype=torch.float16) if encoder.device.type == "cuda" else contextlib.nullcontext()


def _whisper_padded_layer(encoder, waves: list[np.ndarray], layer: int, pooling: str) -> np.ndarray:
    import torch

    from probekit.extract.encoders import whisper_frames

    model = encoder.model
    frames = [whisper_frames(len(w), encoder._samples_per_frame) for w in waves]
    with torch.inference_mode(), _autocast(encoder):
        mel, n_columns = _padded_mel_prefix(encoder, waves)
        x = _convolve_front(model, mel.to(encoder.device), n_columns)
        x = x + model.embed_positions.weight[: x.shape[1]]
        pooled = _pooled_state(model, x, layer, torch.as_tensor(frames, device=encoder.device), pooling)
    return pooled.cpu().numpy().astype(np.float32)


def _whisper_fast_layer(encoder, waves: list[np.ndarray], layer: int, pooling: str) -> np.ndarray:
    """Whisper's fast mode (real frames only), one group of equal-length windows at a time: no padding, no mask.

    The same features and embedding (:func:`probekit.extract.encoders.whisper_embed`) as the extractor's fast mode,
    whose masking has nothing to mask when every row has one length.
    """
    import torch

    from probekit.extract.encoders import whisper_embed, whisper_frames

    model = encoder.model
    out = np.empty((len(waves), 0), np.float32)
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        groups.setdefault(len(w), []).append(i)
    for n, rows in groups.items():
        n_frames = whisper_frames(n, encoder._samples_per_frame)
        batch = torch.from_numpy(np.stack([np.asarray(waves[i], np.float32) for i in rows]))
        with torch.inference_mode(), _autocast(encoder):
            mel = encoder.log_mel.real_frames(batch, [n] * len(rows), [2 * n_frames] * len(rows))
            x = whisper_embed(model, mel)
            frames = torch.full((len(rows),), n_frames, device=encoder.device)
            pooled = _pooled_state(model, x, layer, frames, pooling).cpu().numpy().astype(np.float32)
        if out.shape[1] == 0:
            out = np.empty((len(waves), pooled.shape[1]), np.float32)
        out[rows] = pooled
    return out


def _padded_mel_prefix(encoder, waves: list[np.ndarray]):
    """The first columns of each wave's padded 30 s log-mel, up to and a little past the audio: ``(mel, n_columns)``.

    ``mel``: ``(batch, n_mels, k)`` with the last columns all equal to the padding's column; ``n_columns``: the
    full window's column count (3000). A padded window's columns after the audio are STFT frames of
    zeros, and its normalisation takes the maximum over the audio's columns; so cutting the zero padding
    short, yet long enough that no kept frame reaches the end of the array, gives the same columns with
    the same normalisation from a fraction of the STFT. The same feature call as ``Encoder._whisper_padded``.
    """
    fe = encoder.feature_extractor
    hop, n_fft, full = int(fe.hop_length), int(fe.n_fft), int(fe.n_samples)
    n_columns = full // hop
    # Columns whose frame touches audio, plus ten all-zero ones (the convolutions need eight).
    keep = -(-(max(len(w) for w in waves) + n_fft // 2) // hop) + 10
    length = keep * hop + n_fft
    arrays = [np.asarray(w, np.float32) for w in waves]
    if length >= full:
        return fe(arrays, sampling_rate=encoder.sample_rate, return_tensors="pt").input_features, n_columns
    short = [np.concatenate([w, np.zeros(length - len(w), np.float32)]) for w in arrays]
    mel = fe(short, sampling_rate=encoder.sample_rate, padding="max_length", max_length=length,
             return_tensors="pt").input_features
    return mel[..., :keep], n_columns


def _convolve_front(model, mel, n: int):
    """``gelu(conv2(gelu(conv1(full_mel))))`` as ``(batch, n // 2, d_model)``, convolving the padding only once.

    ``mel``: the first columns of the full ``n``-column log-mel, whose later columns all equal ``mel``'s last.
    After the audio, every mel column of a padded window is the same (the clamped floor of silence), so
    both convolutions give one repeated column there, and a different one at the very end, where the
    kernel meets the zero padding. The columns up to the padding plus a few constant ones are convolved;
    the repeated column and the end column are copied out to the full 1500 frames.
    """
    import torch
    from torch.nn.functional import gelu

    same = (mel == mel[..., -1:]).all(dim=1)  # (batch, n): column equals the last one
    varying = (~same).float().cumsum(dim=1).argmax(dim=1)  # last column that differs, per row
    first_constant = int(varying.max()) + 1 if bool((~same).any()) else 0
    # Even, and at least 8 constant columns so that both strides see a settled run and the end column.
    m = first_constant + 8 + (first_constant % 2)
    if m >= n or m > mel.shape[-1]:
        if mel.shape[-1] < n:
            mel = torch.cat([mel, mel[..., -1:].expand(-1, -1, n - mel.shape[-1])], dim=-1)
        return gelu(model.conv2(gelu(model.conv1(mel)))).permute(0, 2, 1)
    short = gelu(model.conv2(gelu(model.conv1(mel[..., :m])))).permute(0, 2, 1)  # (batch, m / 2, d)
    half = m // 2
    run = short[:, half - 2 : half - 1].expand(-1, n // 2 - half, -1)
    return torch.cat([short[:, : half - 1], run, short[:, half - 1 :]], dim=1)


def _pooled_state(model, x, layer: int, frames, pooling: str):
    """Hidden state ``layer`` of a Whisper encoder from its embedded input ``x`` ``(batch, T, d)``, pooled over each
    row's first ``frames[i]`` frames: ``(batch, pooled_dim)`` float32. Every row attends to all ``T`` frames; only
    the last layer's outputs are limited to the pooled frames."""
    from probekit.extract.pooling import pool_hidden

    keep = int(frames.max())
    if layer == 0:
        return pool_hidden(x[None, :, :keep].float(), frames, pooling=pooling)[:, 0]
    for block in model.layers[: layer - 1]:
        x = block(x, None)
    # HF's last hidden state carries the final layer norm (an Identity once the encoder is truncated).
    final_norm = model.layer_norm if layer == len(model.layers) else None
    return _last_layer_pooled(model.layers[layer - 1], x, frames, pooling, final_norm)


def _last_layer_pooled(block, x, frames, pooling: str, final_norm=None):
    """A WhisperEncoderLayer's output, pooled, for the first ``max(frames)`` frames only: those frames query, all frames
    are keys and values. ``(batch, pooled_dim)`` float32.

    The same operations, in the same order, as the layer's own forward; the attention is called in its
    key/value-states form so that only the kept rows are projected to queries. With mean pooling and no
    final norm after it, ``fc2`` (linear) runs once on the pooled activation instead of on every frame.
    """
    import torch

    from probekit.extract.pooling import pool_hidden

    rows = int(frames.max())
    h = block.self_attn_layer_norm(x)
    if rows < x.shape[1]:
        attended, _ = block.self_attn(hidden_states=h[:, :rows], key_value_states=h)
    else:
        attended, _ = block.self_attn(hidden_states=h, attention_mask=None)
    y = x[:, :rows] + attended
    a = block.activation_fn(block.fc1(block.final_layer_norm(y)))
    if pooling == "mean" and (final_norm is None or isinstance(final_norm, torch.nn.Identity)):
        mean_y = pool_hidden(y[None].float(), frames, pooling="mean")[:, 0]
        mean_a = pool_hidden(a[None].float(), frames, pooling="mean")[:, 0]
        return mean_y + block.fc2(mean_a.to(a.dtype)).float()
    out = y + block.fc2(a)
    if final_norm is not None:
        out = final_norm(out)
    return pool_hidden(out[None].float(), frames, pooling=pooling)[:, 0]
