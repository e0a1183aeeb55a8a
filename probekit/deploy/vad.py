"""Voice activity for timelines: which windows of a call hold speech, with Silero VAD (docs/predict.md, "Speech only").

Silero VAD (MIT) ships its TorchScript weights inside the ``silero-vad`` wheel, so it runs offline; it needs only
torch (the project's pinned one) and ``packaging``. It is stateful across 32 ms frames, so a call is fed block by
block as it streams and one probability per frame is kept. A window counts as speech when at least ``min_speech``
seconds of its frames reach ``threshold``. The VAD always listens at 8 kHz, Silero's telephone rate (speech lives
below 4 kHz): 16 kHz blocks are resampled on the way in.
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


class VadError(ProbekitError, ValueError):
    """The VAD cannot run as asked: a bad threshold, an unsupported rate, or silero-vad not installed."""


@dataclass(frozen=True)
class VadSpec:
    """How speech is told from non-speech: ``threshold`` (0..1) on Silero's frame probability, and
    ``min_speech`` seconds of speech frames a window needs to count as speech."""

    threshold: float = 0.5
    min_speech: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise VadError(f"--vad-threshold {self.threshold} must be between 0 and 1 (exclusive); Silero's default is 0.5")
        if self.min_speech < 0:
            raise VadError(f"min_speech {self.min_speech} s must not be negative")


# The releases probekit supports (as in pyproject.toml): the first whose import needs no torchaudio, up to the next major.
_SILERO_PIN = "silero-vad>=6.2.3,<7"


def load_silero() -> SileroVad:
    """The packaged Silero VAD model (CPU, read from the wheel; no network), ready for :class:`StreamingVad`."""
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    except ImportError as exc:
        if exc.name == "torchaudio":
            # silero-vad 6.2.2 and older import torchaudio at the top; installing it would pull a second torch.
            raise VadError("this silero-vad is older than 6.2.3 and needs torchaudio; upgrade it instead: "
                           f"pip install --no-deps {_SILERO_PIN!r}") from exc
        raise VadError(f"voice activity needs the silero-vad package: pip install --no-deps {_SILERO_PIN!r} "
                       "(its weights ship in the wheel; --no-deps keeps it from touching torch)") from exc
    finally:
        # Importing silero_vad sets torch to one thread for the whole process; the encoder should keep its threads.
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        # The loader uses APIs that torch and importlib mark deprecated; that is silero's to change, not the user's.
        warnings.simplefilter("ignore", DeprecationWarning)
        return SileroVad(load_silero_vad())


class SileroVad:
    """Silero's 8 kHz model, run a block of frames at a time: :meth:`probabilities` of consecutive frames, carrying
    the recurrent state (and the 4 ms of context each frame sees from the one before) from block to block.

    Only the LSTM cell is recurrent, so the front end and the head run on all frames of a block at once and the
    LSTM over them in one call: Silero's own frame-by-frame probabilities at a tenth of the cost.
    ``jit``: the TorchScript model ``silero_vad.load_silero_vad()`` returns. Its 8 kHz submodule's front end
    (``run_extractors``, ``encoder``), LSTM cell (``decoder.rnn``) and head (``decoder.decoder``) are used as
    they are; the construction checks the result against the model's own frame-by-frame loop and refuses a
    silero-vad whose model is laid out otherwise.
    """

    frame = 256  # samples of one 32 ms frame at 8 kHz
    context = 32  # samples of the previous frame each frame sees

    def __init__(self, jit):
        import torch

        self.jit = jit
        try:
            net = jit._model_8k
            cell = net.decoder.rnn
            self._extract, self._encoder, self._head = net.run_extractors, net.encoder, net.decoder.decoder
            self._lstm = torch.nn.LSTM(int(cell.weight_hh.shape[1]), int(cell.weight_hh.shape[1]))
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(self._lstm, f"{name}_l0").copy_(getattr(cell, name))
            self._lstm.eval()
            self._check()
        except (AttributeError, RuntimeError) as exc:
            raise VadError(f"this silero-vad's model is not laid out as probekit expects ({exc}); "
                           f"probekit is tested with silero-vad 6.2.3 (pip install --no-deps {_SILERO_PIN!r})") from exc
        self.reset()

    def reset(self) -> None:
        """Start a new recording: zero state and zero context."""
        import torch

        self._state = (torch.zeros(1, 1, self._lstm.hidden_size), torch.zeros(1, 1, self._lstm.hidden_size))
        self._previous = np.zeros(self.context, np.float32)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability ``(len(audio) // 256,)`` of each whole 32 ms frame of ``audio`` (float32, 8 kHz), which
        continues the audio of the previous call since :meth:`reset`; a trailing partial frame must be passed again."""
        import torch

        n = len(audio) // self.frame
        if n == 0:
            return np.zeros(0, np.float32)
        frames = np.asarray(audio[: n * self.frame], np.float32).reshape(n, self.frame)
        before = np.concatenate([self._previous[None], frames[:-1, -self.context:]])
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate([before, frames], axis=1)))
        threads = torch.get_num_threads()
        # Small convolutions and one 128-unit LSTM step per frame: a second thread only adds waiting.
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                features = self._encoder(self._extract(x)).squeeze(-1)  # (n, hidden)
                hidden, self._state = self._lstm(features[:, None, :], self._state)
                out = self._head(hidden[:, 0, :, None]).reshape(n).numpy().astype(np.float32)
        finally:
            torch.set_num_threads(threads)
        self._previous = frames[-1, -self.context:].copy()
        return out

    def _check(self) -> None:
        """Raise RuntimeError unless a block pass equals the model's own frame-by-frame loop on a test signal."""
        import torch

        t = np.arange(40 * self.frame) / _VAD_RATE
        signal = (0.3 * np.sin(2 * np.pi * (150 + 400 * t) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
                  + 0.01 * np.random.default_rng(0).normal(size=len(t))).astype(np.float32)
        self.reset()
        batched = np.concatenate([self.probabilities(signal[:7 * self.frame]), self.probabilities(signal[7 * self.frame:])])
        self.jit.reset_states()
        with torch.inference_mode():
            own = np.array([float(self.jit(torch.from_numpy(signal[i:i + self.frame]), _VAD_RATE))
                            for i in range(0, len(signal), self.frame)])
        self.jit.reset_states()
        gap = float(np.abs(batched - own).max())
        # An explicit raise, not an assert: `python -O` must not skip the check.
        if not gap < 1e-4:
            raise RuntimeError(f"block and frame-by-frame passes differ by {gap:.1e}")


class StreamingVad:
    """Silero VAD fed block by block. ``rate``: Hz of the blocks (8000 or 16000); ``model``: a :class:`SileroVad`
    (loaded when not given; it is reset here, so one model serves one recording at a time).

    ``feed(block)`` queues samples; ``probabilities`` holds one speech probability per complete frame
    scored so far; :meth:`speech_seconds` and :meth:`is_speech` judge a span of samples, scoring what
    they need first. Probabilities equal Silero's own frame-by-frame pass over the whole recording.
    """

    def __init__(self, rate: int, spec: VadSpec = VadSpec(), model: SileroVad | None = None):
        import soxr

        if rate not in VAD_RATES:
            raise VadError(f"Silero VAD runs at 8000 or 16000 Hz, not {rate} Hz")
        self.rate = rate
        self.spec = spec
        self.frame = SileroVad.frame  # samples of one 32 ms frame at the 8 kHz the model runs at
        self.input_frame = self.frame * rate // _VAD_RATE  # the same 32 ms in the caller's samples
        self._resampler = soxr.ResampleStream(rate, _VAD_RATE, 1, dtype="float32") if rate != _VAD_RATE else None
        self._model = model if model is not None else load_silero()
        self._model.reset()
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
        used = len(self._queue) // self.frame * self.frame
        if used == 0:
            return
        self._probs = np.concatenate([self._probs, self._model.probabilities(self._queue[:used])])
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
