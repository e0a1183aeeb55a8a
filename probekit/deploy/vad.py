"""Voice activity for timelines: which windows of a call hold speech, with Silero VAD.

Silero VAD (MIT) ships its TorchScript weights inside the ``silero-vad`` wheel, so it runs offline and
downloads nothing; it needs only torch (the project's pinned one) and ``packaging``. It gives one speech
probability per 32 ms frame and is stateful across frames, so a call is fed block by block as it
streams and the frame probabilities (one float per 32 ms: about 450 kB for an hour) are kept. A window
counts as speech when at least ``min_speech`` seconds of its frames reach ``threshold``.

The VAD always listens at 8 kHz, Silero's telephone rate: 16 kHz blocks are resampled on the way in
(a streaming soxr resampler), which costs less than half of running Silero's 16 kHz path and judges
speech as well for this purpose (speech lives below 4 kHz; telephone calls arrive at 8 kHz anyway).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from probekit.errors import ProbekitError

#: Rates Silero VAD was trained for; every encoder probekit supports runs at 16 kHz.
VAD_RATES = (8000, 16000)
_VAD_RATE = 8000
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_SPEECH = 0.25


class VadError(ProbekitError, ValueError):
    """The VAD cannot run as asked: a bad threshold, an unsupported rate, or silero-vad not installed."""


@dataclass(frozen=True)
class VadSpec:
    """How speech is told from non-speech: ``threshold`` (0..1) on Silero's frame probability, and
    ``min_speech`` seconds of speech frames a window needs to count as speech."""

    threshold: float = DEFAULT_THRESHOLD
    min_speech: float = DEFAULT_MIN_SPEECH

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise VadError(f"--vad-threshold {self.threshold} must be between 0 and 1 (exclusive); Silero's default is 0.5")
        if self.min_speech < 0:
            raise VadError(f"min_speech {self.min_speech} s must not be negative")


def load_silero():
    """The packaged Silero VAD TorchScript model (CPU, read from the wheel; no network)."""
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    except ImportError as exc:
        raise VadError("voice activity needs the silero-vad package: pip install --no-deps silero-vad "
                       "(its weights ship in the wheel; --no-deps keeps it from touching torch)") from exc
    finally:
        # Importing silero_vad sets torch to one thread for the whole process; the encoder should keep its threads.
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        # The loader uses APIs that torch and importlib mark deprecated; that is silero's to change, not the user's.
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()


class StreamingVad:
    """Silero VAD fed block by block. ``rate``: Hz of the blocks (8000 or 16000).

    ``feed(block)`` queues samples; ``probabilities`` holds one speech probability per complete frame
    scored so far; :meth:`speech_seconds` and :meth:`is_speech` judge a span of samples, scoring what
    they need first.

    Silero is a recurrent model, one 32 ms frame per call, and a call costs far more in overhead than in
    arithmetic. So queued audio is cut into lanes of ``lane_seconds`` that run side by side as one batch,
    each lane starting from a fresh state ``warmup_seconds`` before its first frame (the warm-up frames'
    outputs are dropped). That is about ten times fewer calls than a frame-by-frame pass; the
    probabilities differ from a frame-by-frame pass only while a fresh state settles (measured in
    tests/test_call_windows.py).
    """

    def __init__(self, rate: int, spec: VadSpec = VadSpec(), model=None, lane_seconds: float = 1.024,
                 warmup_seconds: float = 0.512):
        import soxr

        if rate not in VAD_RATES:
            raise VadError(f"Silero VAD runs at 8000 or 16000 Hz, not {rate} Hz")
        self.rate = rate
        self.spec = spec
        self.frame = 256  # samples of one 32 ms frame at the 8 kHz the model runs at
        self.input_frame = self.frame * rate // _VAD_RATE  # the same 32 ms in the caller's samples
        self._resampler = soxr.ResampleStream(rate, _VAD_RATE, 1, dtype="float32") if rate != _VAD_RATE else None
        self.lane = max(1, int(round(lane_seconds * _VAD_RATE / self.frame)))
        self.warmup = max(0, int(round(warmup_seconds * _VAD_RATE / self.frame)))
        self._model = model if model is not None else load_silero()
        self._history = np.zeros(self.warmup * self.frame, np.float32)  # audio just before the queue (zeros at the start)
        self._queue = np.zeros(0, np.float32)
        self._probs = np.zeros(0, np.float32)

    @property
    def probabilities(self) -> np.ndarray:
        """``(n_frames,)`` speech probability of each complete frame scored so far."""
        self._score()
        return self._probs

    def feed(self, block: np.ndarray, last: bool = False) -> None:
        """Queue ``(n,)`` float32 samples at ``rate``; they are scored when a span needs them. ``last`` flushes
        the resampler at the end of a call."""
        block = np.asarray(block, np.float32)
        if self._resampler is not None:
            block = self._resampler.resample_chunk(block, last=last)
        self._queue = np.concatenate([self._queue, block])

    def _score(self) -> None:
        import torch

        n_frames = len(self._queue) // self.frame
        if n_frames == 0:
            return
        lanes = -(-n_frames // self.lane)
        steps = self.warmup + self.lane
        # Each lane: its warm-up audio, then its own frames; the last lane is zero-filled past the queue.
        audio = np.concatenate([self._history, self._queue[: n_frames * self.frame],
                                np.zeros((lanes * self.lane - n_frames) * self.frame, np.float32)])
        hop = self.lane * self.frame
        batch = np.stack([audio[i * hop: i * hop + steps * self.frame] for i in range(lanes)])
        out = np.empty((lanes, steps), np.float32)
        threads = torch.get_num_threads()
        # A batch of 32 ms frames is far too small to split across threads: more threads only add contention.
        torch.set_num_threads(1)
        try:
            self._model.reset_states()
            x = torch.from_numpy(batch)
            with torch.inference_mode():
                for k in range(steps):
                    out[:, k] = self._model(x[:, k * self.frame:(k + 1) * self.frame], _VAD_RATE).numpy().reshape(lanes)
        finally:
            torch.set_num_threads(threads)
        self._probs = np.concatenate([self._probs, out[:, self.warmup:].reshape(-1)[:n_frames]])
        used = n_frames * self.frame
        self._history = audio[used: used + len(self._history)].copy()
        self._queue = self._queue[used:].copy()

    def through(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Pass ``blocks`` on unchanged, feeding each to the VAD before it is passed on."""
        # One block of look-ahead, so the last block flushes the resampler.
        it = iter(blocks)
        block = next(it, None)
        while block is not None:
            following = next(it, None)
            self.feed(block, last=following is None)
            yield block
            block = following

    def speech_seconds(self, first: int, last: int) -> float:
        """Seconds of speech frames (probability >= threshold) among the frames that overlap samples ``[first, last)``.

        A trailing partial frame (under 32 ms at the end of a call) has no score and counts as non-speech.
        """
        probs = self.probabilities[first // self.input_frame: -(-last // self.input_frame)]
        return float(np.count_nonzero(probs >= self.spec.threshold)) * self.frame / _VAD_RATE

    def is_speech(self, first: int, last: int) -> bool:
        """Whether samples ``[first, last)`` hold at least ``min_speech`` seconds of speech (all of a shorter span)."""
        need = min(self.spec.min_speech, 0.5 * (last - first) / self.rate)
        return self.speech_seconds(first, last) >= max(need, self.frame / _VAD_RATE)
