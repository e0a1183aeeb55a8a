"""One pooled hidden state for a batch of windows, computing only what that pooled vector needs.

Whisper in padded mode runs every window as its own 30 s pass (1500 frames), and every frame attends
to all 1500, so two windows packed into one pass are never the same as their separate padded passes:
this path does not pack. What it drops is exact: the scorer pools hidden state ``layer`` over the
frames that carry audio only, so the last kept layer computes its output (query, attention, feed-forward)
for those frames alone, with keys and values still taken from all 1500. For a 3 s window that is 150 of
1500 rows of the last layer. Every other step is the same call as :class:`probekit.extract.encoders.Encoder`
makes, so vectors equal ``encode(waves)[:, layer]`` to float rounding (tests/test_timeline.py).

Any other encoder or mode goes through ``encode`` unchanged: wav2vec2-family windows of one call have
one length (only the last may be shorter), so a batch is already exactly the one-by-one result, and
Whisper's fast mode already runs only the real frames.
"""

from __future__ import annotations

import contextlib

import numpy as np


def lean_applies(encoder, waves: list[np.ndarray]) -> bool:
    """Whether :func:`embed_layer` can take the lean padded path for these waves: a probekit Whisper encoder in
    padded mode, every wave within one 30 s window."""
    spec = getattr(encoder, "spec", None)
    return (getattr(encoder, "family", "") == "whisper" and spec is not None and spec.whisper_mode == "padded"
            and all(len(w) <= encoder._window_samples for w in waves))


def embed_layer(encoder, waves: list[np.ndarray], layer: int, pooling: str = "mean") -> np.ndarray:
    """Pooled hidden state ``layer`` of each wave: ``(len(waves), pooled_dim)`` float32.

    ``waves``: float32 mono ``(n_samples,)`` at the encoder's rate. Equals
    ``encoder.encode(waves, pooling)[:, layer]``; faster for a Whisper encoder in padded mode.
    """
    if not waves:
        return np.zeros((0, 0), np.float32)
    if not lean_applies(encoder, waves):
        return np.asarray(encoder.encode(list(waves), pooling=pooling))[:, layer]
    return _whisper_padded_layer(encoder, waves, layer, pooling)


def _whisper_padded_layer(encoder, waves: list[np.ndarray], layer: int, pooling: str) -> np.ndarray:
    import torch

    from probekit.extract.encoders import whisper_frames
    from probekit.extract.pooling import pool_hidden

    model = encoder.model
    if layer > len(model.layers):
        raise ValueError(f"hidden state {layer} needs {layer} layers; the encoder kept {len(model.layers)}")
    frames = [whisper_frames(len(w), encoder._samples_per_frame) for w in waves]
    keep = max(frames)
    autocast = (torch.autocast("cuda", dtype=torch.float16) if encoder.device.type == "cuda"
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        mel, n_columns = _padded_mel_prefix(encoder, waves)
        x = _convolve_front(model, mel.to(encoder.device), n_columns)
        x = x + model.embed_positions.weight[: x.shape[1]]
        if layer == 0:
            out = x[:, :keep]
        else:
            for block in model.layers[: layer - 1]:
                x = block(x, None)
            out = _last_layer_rows(model.layers[layer - 1], x, keep)
            if layer == len(model.layers):
                # HF's last hidden state carries the final layer norm (an Identity once the encoder is truncated).
                out = model.layer_norm(out)
        # The extractor's own pooling, on the device: (1 state, batch, keep, d) -> (batch, 1, pooled_dim).
        pooled = pool_hidden(out[None].float(), torch.as_tensor(frames), pooling=pooling)[:, 0]
    return pooled.cpu().numpy().astype(np.float32)


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


def _last_layer_rows(block, x, rows: int):
    """A WhisperEncoderLayer's output for the first ``rows`` frames only: those frames query, all frames are keys and values.

    The same operations, in the same order, as the layer's own forward; the attention is called in its
    key/value-states form so that only the kept rows are projected to queries.
    """
    residual = x[:, :rows]
    h = block.self_attn_layer_norm(x)
    attended, _ = block.self_attn(hidden_states=h[:, :rows], key_value_states=h)
    y = residual + attended
    z = block.fc2(block.activation_fn(block.fc1(block.final_layer_norm(y))))
    return y + z
