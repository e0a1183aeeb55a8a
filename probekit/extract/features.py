"""Encoder input features computed in torch, batched, on the encoder's device.

- :class:`WhisperLogMel`: Whisper's log-mel spectrogram (the one ``WhisperFeatureExtractor``
  computes in numpy), for the padded 30 s window or for the real frames only.
- :func:`normalize_waves`: the per-segment zero-mean, unit-variance normalisation of the wav2vec2
  family's feature extractor, on a zero-padded batch.

Why only the real frames need an STFT in padded mode: an STFT frame whose window holds only the
zero padding has power 0, so its log-mel is the floor ``log10(1e-10) = -10`` before the per-clip
clamp at ``max - 8`` dB. That clamp takes the maximum over the whole window, padding included;
since no bin is ever below the floor, the maximum is the maximum over the frames that touch
audio, and every padding frame ends up at the constant ``(max(-10, max_real - 8) + 4) / 4``.
So the STFT runs on the audio plus one window of zeros, and the rest of the 3000 frames is a fill.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# The floor WhisperFeatureExtractor clamps mel power to before log10.
_MEL_FLOOR = 1e-10
# Whisper's dynamic range: every bin is clamped to at least (clip maximum - 8) in log10 units.
_DYNAMIC_RANGE = 8.0


class WhisperLogMel:
    """Whisper log-mel features of a batch of waveforms, on ``device``.

    Parameters come from a ``WhisperFeatureExtractor``: ``n_fft`` and ``hop_length`` (samples),
    ``n_samples`` (the 30 s window, samples), ``mel_filters`` ``(n_fft // 2 + 1, n_mels)``.
    """

    def __init__(self, n_fft: int, hop_length: int, n_samples: int, mel_filters: np.ndarray, device: torch.device | str = "cpu"):
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_samples = int(n_samples)
        self.device = torch.device(device)
        # (n_mels, n_freqs), float32 as in WhisperFeatureExtractor's own torch path.
        self.mel_filters = torch.as_tensor(np.asarray(mel_filters).T, dtype=torch.float32, device=self.device).contiguous()
        self.window = torch.hann_window(self.n_fft, device=self.device)
        self.n_frames = self.n_samples // self.hop_length
        # The log-mel of a frame that holds only zeros (power 0, clamped to the floor), as torch computes it.
        self._floor_log = float(torch.tensor(_MEL_FLOOR, dtype=torch.float32).log10())
        self._bands = _mel_bands(self.mel_filters) if self.device.type == "cpu" else None

    @classmethod
    def from_feature_extractor(cls, fe, device: torch.device | str = "cpu") -> WhisperLogMel:
        if float(getattr(fe, "dither", 0.0) or 0.0) != 0.0:
            raise ValueError("WhisperLogMel reproduces dither=0.0 only (random dither would break batch invariance)")
        return cls(fe.n_fft, fe.hop_length, fe.n_samples, fe.mel_filters, device)

    @property
    def n_mels(self) -> int:
        return int(self.mel_filters.shape[0])

    def padded(self, batch: torch.Tensor, lengths: torch.Tensor | list[int]) -> torch.Tensor:
        """Log-mel of each waveform zero-padded to the 30 s window: ``(B, n_mels, n_samples // hop)``.

        ``batch``: ``(B, >= max(lengths))`` float32 waveforms at the extractor's rate, zero beyond
        each row's length; ``lengths``: samples per row, each ``1 .. n_samples``. Equal to
        ``WhisperFeatureExtractor(waves, padding="max_length")`` to float32 rounding.
        """
        longest = max((int(n) for n in lengths), default=0)
        if longest > self.n_samples:
            raise ValueError(f"a waveform of {longest} samples exceeds the {self.n_samples}-sample window")
        # Enough zeros after the longest row that its last audio-touching frame sees only zeros
        # beyond the audio, as in the full window; a multiple of the hop keeps frames aligned.
        span = min(self.n_samples, -(-(longest + self.n_fft) // self.hop_length) * self.hop_length)
        if span == self.n_samples:
            log_spec = self._log_mel(self._fit(batch, span))[:, : self.n_frames]  # Whisper drops the STFT's last frame
        else:
            log_spec = self._log_mel_short(batch, span)
        # Every bin is clamped to its row's maximum minus the dynamic range, then scaled; done on
        # the computed frames in their own (small) layout, then copied into the window once.
        top = log_spec.amax(dim=(1, 2)) - _DYNAMIC_RANGE
        torch.maximum(log_spec, top[:, None, None], out=log_spec)
        log_spec.add_(4.0).div_(4.0)
        out = torch.empty(log_spec.shape[0], self.n_mels, self.n_frames, device=self.device)
        computed = log_spec.shape[1]
        out[..., :computed] = log_spec.transpose(1, 2)
        if computed < self.n_frames:
            # The frames past `span` hold only zeros: power 0, the floor, as computed above.
            out[..., computed:] = top.clamp(min=self._floor_log).add_(4.0).div_(4.0)[:, None, None]
        return out

    def real_frames(self, batch: torch.Tensor, lengths: torch.Tensor | list[int], mel_lengths: list[int]) -> torch.Tensor:
        """Log-mel of the first ``mel_lengths[i]`` frames of each row, zero beyond: ``(B, n_mels, max(mel_lengths))``.

        The clamp's maximum is taken over the frames that touch audio, as the padded window's is,
        so kept frames equal the padded window's (the very last frame of a full 30 s row aside,
        where the window reflects audio and this zero-pads). ``mel_lengths[i] * hop`` must be
        at least ``lengths[i]``.
        """
        longest_mel = max(int(m) for m in mel_lengths)
        span = longest_mel * self.hop_length + self.n_fft
        log_spec = self._log_mel(self._fit(batch, span)).transpose(1, 2)
        top = log_spec.amax(dim=(1, 2), keepdim=True)
        out = (torch.maximum(log_spec, top - _DYNAMIC_RANGE) + 4.0) / 4.0
        out = out[..., :longest_mel]
        keep = torch.arange(longest_mel, device=self.device)[None, :] < torch.as_tensor(mel_lengths, device=self.device)[:, None]
        return (out * keep[:, None, :].to(out.dtype)).contiguous()

    def _fit(self, batch: torch.Tensor, span: int) -> torch.Tensor:
        batch = batch.to(self.device, torch.float32)
        if batch.shape[-1] >= span:
            return batch[:, :span]
        return torch.nn.functional.pad(batch, (0, span - batch.shape[-1]))

    def _log_mel(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, T // hop + 1, n_mels)`` log10 mel power of ``(B, T)`` waveforms, reflect-padded at both ends."""
        stft = torch.stft(batch, self.n_fft, self.hop_length, window=self.window, center=True, pad_mode="reflect", return_complex=True)
        return self._mel(stft)

    def _log_mel_short(self, batch: torch.Tensor, span: int) -> torch.Tensor:
        """:meth:`_log_mel` of ``batch`` zero-padded to ``span`` samples, when ``span`` leaves at
        least ``n_fft`` zeros after every row: the end's reflection is then zeros too, so the
        padded input is built in one buffer instead of a zero pad and a reflect pad."""
        half = self.n_fft // 2
        width = min(batch.shape[-1], span)
        buf = torch.empty(batch.shape[0], span + 2 * half, device=self.device)
        buf[:, half : half + width] = batch[:, :width]
        buf[:, half + width :] = 0.0
        # Reflection of samples 1..half about sample 0, as torch.stft(center=True) pads.
        buf[:, :half] = buf[:, half + 1 : 2 * half + 1].flip(-1)
        stft = torch.stft(buf, self.n_fft, self.hop_length, window=self.window, center=False, return_complex=True)
        return self._mel(stft)

    def _mel(self, stft: torch.Tensor) -> torch.Tensor:
        """``(B, frames, n_mels)`` log10 mel power of a ``(B, n_freqs, frames)`` STFT.

        Frames stay the outer axis (torch.stft lays its result out so): the power is one pass
        over the STFT, and on a CPU each band of filters multiplies only the bins it weights.
        """
        spec = torch.view_as_real(stft.transpose(1, 2).contiguous())  # (B, frames, n_freqs, 2), no copy from torch.stft
        power = torch.mul(spec[..., 0], spec[..., 0]).addcmul_(spec[..., 1], spec[..., 1])
        flat = power.view(-1, power.shape[-1])
        if self._bands is None:
            mel = torch.matmul(flat, self.mel_filters.T)
        else:
            mel = torch.empty(flat.shape[0], self.n_mels, device=self.device)
            for first, last, low, high, weights in self._bands:
                torch.mm(flat[:, low:high], weights, out=mel[:, first:last])
        return mel.view(power.shape[0], power.shape[1], self.n_mels).clamp_(min=_MEL_FLOOR).log10_()


def _mel_bands(mel_filters: torch.Tensor, size: int = 16) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """The filters ``(n_mels, n_freqs)`` in groups of ``size`` consecutive ones, each with the
    frequency bins where any of them has weight: ``(first, last, low, high, weights)`` with
    ``weights = mel_filters[first:last, low:high].T``.

    A mel filter is a triangle over a few neighbouring bins (Whisper's 80 have 391 non-zero
    weights of 16,080), so the groups' products need about a fifth of the dense one's work.
    """
    nonzero = mel_filters != 0
    bands = []
    for first in range(0, mel_filters.shape[0], size):
        last = min(first + size, mel_filters.shape[0])
        used = nonzero[first:last].any(dim=0).nonzero().flatten()
        low, high = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        bands.append((first, last, low, high, mel_filters[first:last, low:high].T.contiguous()))
    return bands


def normalize_waves(batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per row over its first ``lengths[i]`` samples, zero beyond.

    ``batch`` ``(B, T)`` float32, zero-padded. Matches ``Wav2Vec2FeatureExtractor(do_normalize=True)``,
    which normalises each segment before padding (variance with ddof=0, plus 1e-7).
    """
    valid = (torch.arange(batch.shape[-1], device=batch.device)[None, :] < lengths[:, None]).to(batch.dtype)
    n = lengths.to(batch.dtype)[:, None]
    mean = (batch * valid).sum(-1, keepdim=True) / n
    var = (((batch - mean) * valid) ** 2).sum(-1, keepdim=True) / n
    return (batch - mean) / torch.sqrt(var + 1e-7) * valid


def pad_waves(waves: Sequence[np.ndarray], pin: bool = False) -> tuple[torch.Tensor, list[int]]:
    """Zero-pad mono waveforms into one ``(B, longest)`` float32 tensor; returns it and the lengths.

    ``pin`` puts it in page-locked memory so that the copy to a CUDA device can overlap compute.
    """
    lengths = [int(len(w)) for w in waves]
    batch = torch.empty(len(waves), max(lengths, default=0), dtype=torch.float32, pin_memory=pin)
    # Filled through numpy, one thread: this runs in the decoding workers, where a torch fill
    # would start an OpenMP team per worker, whose threads spin beside the encoder's.
    view = batch.numpy()
    for i, w in enumerate(waves):
        view[i, : lengths[i]] = w
        view[i, lengths[i] :] = 0.0
    return batch, lengths
