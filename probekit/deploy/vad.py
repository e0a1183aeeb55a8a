"""Voice activity for timelines: which windows of a call hold speech, with Silero VAD.

Silero VAD (MIT) ships its TorchScript weights inside the ``silero-vad`` wheel, so it runs offline and
downloads nothing; it needs only torch (the project's pinned one) and ``packaging``. It gives one speech
probability per 32 ms frame (512 samples at 16 kHz, 256 at 8 kHz) and is stateful across frames, so a
call is fed block by block as it streams and the frame probabilities (one float per 32 ms: about
450 kB for an hour) are kept. A window counts as speech when at least ``min_speech`` seconds of its
frames reach ``threshold``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from probekit.errors import ProbekitError

#: Rates Silero VAD was trained for; every encoder probekit supports runs at 16 kHz.
VAD_RATES = (8000, 16000)
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

    ``feed(block)`` consumes samples; ``probabilities`` holds one speech probability per complete
    frame so far; :meth:`speech_seconds` and :meth:`is_speech` judge a span of samples.
    """

    def __init__(self, rate: int, spec: VadSpec = VadSpec(), model=None):
        if rate not in VAD_RATES:
            raise VadError(f"Silero VAD runs at 8000 or 16000 Hz, not {rate} Hz")
        self.rate = rate
        self.spec = spec
        self.frame = 512 if rate == 16000 else 256
        self._model = model if model is not None else load_silero()
        self._model.reset_states()
        self._rest = np.zeros(0, np.float32)
        self._probs: list[float] = []

    @property
    def probabilities(self) -> np.ndarray:
        """``(n_frames,)`` speech probability of each complete frame fed so far."""
        return np.asarray(self._probs, dtype=np.float32)

    def feed(self, block: np.ndarray) -> None:
        """Add ``(n,)`` float32 samples at ``rate``; complete frames are scored at once."""
        import torch

        data = np.concatenate([self._rest, np.asarray(block, np.float32)])
        usable = len(data) - len(data) % self.frame
        threads = torch.get_num_threads()
        # A 32 ms frame is far too small to split across threads: more threads only add contention.
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                for lo in range(0, usable, self.frame):
                    self._probs.append(float(self._model(torch.from_numpy(data[lo:lo + self.frame]), self.rate)))
        finally:
            torch.set_num_threads(threads)
        self._rest = data[usable:].copy()

    def through(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Pass ``blocks`` on unchanged, feeding each to the VAD before it is passed on."""
        for block in blocks:
            self.feed(block)
            yield block

    def speech_seconds(self, first: int, last: int) -> float:
        """Seconds of speech frames (probability >= threshold) among the frames that overlap samples ``[first, last)``.

        A trailing partial frame (under 32 ms at the end of a call) has no score and counts as non-speech.
        """
        lo, hi = first // self.frame, -(-last // self.frame)
        probs = self._probs[lo:hi]
        return sum(p >= self.spec.threshold for p in probs) * self.frame / self.rate

    def is_speech(self, first: int, last: int) -> bool:
        """Whether samples ``[first, last)`` hold at least ``min_speech`` seconds of speech (all of a shorter span)."""
        need = min(self.spec.min_speech, 0.5 * (last - first) / self.rate)
        return self.speech_seconds(first, last) >= max(need, self.frame / self.rate)
