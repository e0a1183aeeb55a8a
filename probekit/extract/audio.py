"""Decode one manifest segment into the mono float32 waveform an encoder expects.

``probe_segment`` reads only the header (for batch planning); ``load_segment`` reads only the
frames between ``start`` and ``end``, keeps one channel or downmixes to mono, and resamples with
soxr. Anything that would make an embedding meaningless (unreadable, empty, truncated, silent, too
short, cut past the end of the file, a channel the file lacks) raises :class:`AudioError` naming
the reason.
"""

from __future__ import annotations

from probekit.errors import ProbekitError
from probekit.manifest import channel_problem

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

# Peak amplitude below which a segment counts as silent: -80 dBFS, far under any recorded voice
# or line noise, but above the dither of a digitally silent file.
SILENCE_PEAK = 1e-4


class AudioError(ProbekitError, ValueError):
    """A segment cannot be encoded; ``reason`` is a short phrase for reports."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class SegmentInfo:
    """What the header says about a segment: source rate (Hz), first frame, frame count, channels in the file."""

    sample_rate: int
    first_frame: int
    num_frames: int
    channels: int = 1


def resampled_length(num_frames: int, source_rate: int, target_rate: int) -> int:
    """Samples soxr returns for ``num_frames`` at ``source_rate`` resampled to ``target_rate``."""
    if source_rate == target_rate:
        return num_frames
    return int(math.floor(num_frames * target_rate / source_rate + 0.5))


def _wav_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE header promises more sample bytes than the file holds.

    libsndfile silently shortens such files, so a cut-off download would otherwise pass as a
    shorter clip.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return False
            size = path.stat().st_size
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
                if chunk_id == b"data":
                    # 0 and 0xFFFFFFFF mark streamed files whose size was never filled in.
                    return chunk_size not in (0, 0xFFFFFFFF) and pos + 8 + chunk_size > size
                pos += 8 + chunk_size + (chunk_size & 1)
    except OSError:
        return False
    return False


@dataclass(frozen=True)
class FileHeader:
    """What the header of one audio file says: rate (Hz), frames, channels, and whether a WAV
    header promises more sample bytes than the file holds."""

    sample_rate: int
    frames: int
    channels: int
    truncated: bool = False


def read_header(path: str | Path) -> FileHeader:
    """The header of ``path`` (no samples decoded); raises :class:`AudioError` for an unreadable
    or empty file. The segment checks are :func:`locate_segment`'s, so that rows cutting several
    segments from one file read its header once."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise AudioError(f"unreadable audio file ({_short(exc)})") from exc
    if info.frames <= 0:
        raise AudioError("empty audio file (0 frames)")
    return FileHeader(int(info.samplerate), int(info.frames), int(info.channels), _wav_truncated(path))


def locate_segment(header: FileHeader, start: float | None = None, end: float | None = None,
                   channel: int | None = None) -> SegmentInfo:
    """Locate ``[start, end)`` seconds in a file of ``header``; raises :class:`AudioError` for a
    channel the file lacks, a truncated WAV file, or times outside the file."""
    problem = channel_problem(channel, header.channels)
    if problem:
        raise AudioError(problem)
    if header.truncated:
        raise AudioError("truncated WAV file: the header promises more samples than the file holds")
    rate = header.sample_rate
    total = header.frames
    first = 0 if start is None else int(round(start * rate))
    last = total if end is None else int(round(end * rate))
    file_seconds = total / rate
    if first >= total:
        raise AudioError(f"start {start} s is at or past the end of the file ({file_seconds:.3f} s)")
    # Half a millisecond of slack: manifests often round end times to the file's duration.
    if end is not None and last > total + max(1, rate // 2000):
        raise AudioError(f"end {end} s is past the end of the file ({file_seconds:.3f} s)")
    last = min(last, total)
    if last <= first:
        raise AudioError("segment has no samples")
    return SegmentInfo(sample_rate=rate, first_frame=first, num_frames=last - first, channels=header.channels)


def probe_segment(
    path: str | Path, start: float | None = None, end: float | None = None, channel: int | None = None
) -> SegmentInfo:
    """Read the header of ``path`` and locate ``[start, end)`` seconds in it (no samples decoded).

    ``channel`` (0-based), when given, must exist in the file.
    """
    return locate_segment(read_header(path), start, end, channel)


def pick_channel(frames: np.ndarray, channel: int | None) -> np.ndarray:
    """``(n_frames, n_channels)`` float32 -> ``(n_frames,)``: channel ``channel`` (0-based), or the channel mean for ``None``.

    The one place a channel is chosen, so ``extract`` and ``predict`` (whole files and streamed calls) agree.
    """
    if channel is not None:
        return np.ascontiguousarray(frames[:, channel])
    if frames.shape[1] > 1:
        return frames.mean(axis=1, dtype=np.float32)
    return frames[:, 0]


def load_segment(
    path: str | Path,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = 16000,
    min_samples: int = 0,
    channel: int | None = None,
) -> np.ndarray:
    """Decode ``[start, end)`` seconds of ``path`` as mono float32 at ``sample_rate`` Hz: ``(n_samples,)``.

    Only the needed frames are read (seek, then read). ``channel`` (0-based) keeps that one channel
    of a multi-channel file, e.g. the caller's side of a two-channel call; ``None`` averages the
    channels. Resampling uses soxr's high-quality filter. Raises :class:`AudioError` when the
    segment is unusable (the silence check applies to the kept channel), including when it is
    shorter than ``min_samples`` (the encoder's receptive field) or ``channel`` is not in the file.
    """
    seg = probe_segment(path, start, end, channel)
    try:
        with sf.SoundFile(str(path)) as fh:
            if seg.first_frame:
                fh.seek(seg.first_frame)
            data = fh.read(seg.num_frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise AudioError(f"corrupt audio: decoding failed ({_short(exc)})") from exc
    if data.shape[0] < seg.num_frames:
        raise AudioError(f"truncated or corrupt audio: read {data.shape[0]} of {seg.num_frames} frames")
    wave = pick_channel(data, channel)
    if not np.isfinite(wave).all():
        raise AudioError("corrupt audio: samples are not finite numbers")
    peak = float(np.abs(wave).max())
    if peak < SILENCE_PEAK:
        raise AudioError(f"silent: peak amplitude {peak:.1e} is below {SILENCE_PEAK:.0e}")
    if seg.sample_rate != sample_rate:
        wave = soxr.resample(wave, seg.sample_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    if len(wave) < min_samples:
        raise AudioError(
            f"too short: {len(wave) / sample_rate * 1000:.1f} ms is under the encoder's minimum of "
            f"{min_samples / sample_rate * 1000:.1f} ms"
        )
    return np.ascontiguousarray(wave, dtype=np.float32)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
