"""A deployable scorer: an export folder plus its encoder, run only up to the exported layer.

``load_scorer(dir).predict(audio_or_paths)`` mirrors ``probekit predict``; ``.timeline(path, window, hop)``
mirrors ``probekit predict --window S --hop S``. ``load_scorer(dir, fast=True)`` runs a padded-mode
Whisper export in Whisper's fast mode (see docs/predict.md for what that changes).
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from probekit.deploy.export import ExportError, Head, load_export, thresholds_for
from probekit.probe.calibration import CalibrationError, ProbabilityCalibrator

_MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")


class ScorerError(ProbekitError, RuntimeError):
    """Input the scorer cannot score: a bad path, an unreadable file, a waveform of the wrong shape."""


class EncoderLike(Protocol):
    """What the scorer needs from :func:`probekit.extract.encoders.load_encoder`'s result."""

    sample_rate: int
    num_hidden_states: int
    min_samples: int

    def encode(self, waves: list[np.ndarray], pooling: str = "mean") -> np.ndarray: ...


@dataclass(frozen=True)
class Predictions:
    """Scores of a set of items. ``probabilities``/``decisions``: ``(n, n_labels)``; ``start``/``end``: seconds
    (NaN for a whole file or waveform). Multi-class decisions are one-hot on the most probable label.
    ``failed``: ``(id, reason)`` of each input that could not be scored (only with ``on_error="skip"``)."""

    ids: tuple[str, ...]
    start: np.ndarray
    end: np.ndarray
    labels: tuple[str, ...]
    probabilities: np.ndarray
    decisions: np.ndarray
    failed: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def to_csv(self, path: str | Path) -> Path:
        """Columns: id, start_s, end_s, ``p_<label>`` for each label, ``<label>`` (0/1 decision) for each label."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(csv_header(self.labels))
            self.write_rows(w)
        return path

    def write_rows(self, writer) -> None:
        """Append one row per item to a ``csv.writer`` (the columns of :func:`csv_header`)."""
        for i, sid in enumerate(self.ids):
            writer.writerow([sid, _fmt(self.start[i]), _fmt(self.end[i]),
                             *(f"{p:.6f}" for p in self.probabilities[i]), *(int(d) for d in self.decisions[i])])


def csv_header(labels: Sequence[str]) -> list[str]:
    """Columns of a predictions CSV: id, start_s, end_s, ``p_<label>`` per label, ``<label>`` (0/1) per label."""
    return ["id", "start_s", "end_s", *(f"p_{l}" for l in labels), *labels]


def _calibrator(config: dict, n_labels: int) -> ProbabilityCalibrator | None:
    """The export's calibration map, checked against its labels; ``None`` when it has none."""
    state = config.get("calibration")
    if not state:
        return None
    try:
        cal = ProbabilityCalibrator.from_config(state)
    except CalibrationError as exc:
        raise ScorerError(str(exc)) from None
    if cal.n_columns_ != n_labels:
        raise ScorerError(f"the export's calibration has {cal.n_columns_} column(s) for {n_labels} label(s); re-export the probe")
    return cal


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.3f}"


class Scorer:
    """Scores audio with an exported probe. Build with :func:`load_scorer`.

    ``layer``: hidden state index scored; ``labels``: output columns; ``thresholds``: ``(n_labels,)``
    decision thresholds (unused for multi-class); ``calibrator``: the export's calibration map (``None``
    when it was exported uncalibrated); ``sample_rate``: Hz the encoder expects.
    """

    def __init__(self, config: dict, head: Head, encoder: EncoderLike | None = None, device: str = "auto",
                 fast: bool = False):
        self.config = config
        self.head = head
        self.layer = int(config["layer"])
        self.labels = tuple(str(l) for l in config["labels"])
        self.task = str(config["task"]["kind"])
        self.thresholds = thresholds_for(config, len(self.labels))
        self.calibrator = _calibrator(config, len(self.labels))
        self.pooling = str(config["encoder"].get("pooling", "mean"))
        self.sample_rate = int(config["encoder"].get("sample_rate", 16000))
        self._device = device
        self._encoder = encoder
        self.fast = fast

    @property
    def encoder(self) -> EncoderLike:
        """The encoder, truncated after ``layer`` so deeper layers are never computed (loaded on first use)."""
        if self._encoder is None:
            from probekit.extract.encoders import EncoderSpec, load_encoder

            enc = self.config["encoder"]
            mode = "fast" if self.fast else (enc.get("whisper_mode") or "padded")
            spec = EncoderSpec(model=enc["model"], revision=enc.get("revision") or None,
                               whisper_mode=mode, device=self._device, max_layer=self.layer)
            self._encoder = load_encoder(spec)
            self._check_identity(self._encoder)
        return self._encoder

    def _check_identity(self, encoder) -> None:
        want = self.config["encoder"]
        have = getattr(encoder, "identity", {}) or {}
        for key in ("commit", "config_hash"):
            if want.get(key) and have.get(key) and str(want[key]) != str(have[key]):
                raise ScorerError(f"encoder {want['model']!r} has {key} {have[key]!r} but the probe was trained on {want[key]!r}; "
                                  "load the same checkpoint (or --revision) the cache was extracted with")
        if int(encoder.sample_rate) != self.sample_rate:
            raise ScorerError(f"encoder runs at {encoder.sample_rate} Hz but the export says {self.sample_rate} Hz")

    # ------------------------------------------------------------------ scoring
    def score_embeddings(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``(n, dim)`` pooled hidden state ``layer`` -> ``(probabilities, decisions)``, each ``(n, n_labels)``.

        Probabilities are calibrated first when the export carries a calibration map: its thresholds were
        tuned on calibrated scores, so applying them to raw ones would move every decision."""
        p = self.head.predict_proba(x)
        if self.calibrator is not None:
            p = self.calibrator.transform(p)
        if self.task == "multiclass":
            d = np.zeros_like(p, dtype=bool)
            d[np.arange(len(p)), p.argmax(axis=1)] = True
        else:
            d = p >= self.thresholds
        return p, d

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 waveforms at ``sample_rate`` -> ``(n, dim)`` pooled hidden state ``layer``."""
        if not waves:
            return np.zeros((0, self.head.dim), dtype=np.float32)
        out = np.asarray(self.encoder.encode(list(waves), pooling=self.pooling))
        if out.ndim != 3 or out.shape[1] <= self.layer:
            raise ScorerError(f"encoder returned shape {out.shape}; expected (n, > {self.layer}, {self.head.dim})")
        return out[:, self.layer, :]

    def embed_windows(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Like :meth:`embed`, for the windows of a call: one batch through the truncated encoder, computing only
        the rows the pooled vector needs (exact; see :mod:`probekit.deploy.batched`). ``(n, dim)``."""
        from probekit.deploy.batched import embed_layer

        if not waves:
            return np.zeros((0, self.head.dim), dtype=np.float32)
        out = embed_layer(self.encoder, list(waves), self.layer, self.pooling)
        if out.shape != (len(waves), self.head.dim):
            raise ScorerError(f"encoder gave vectors of shape {out.shape}; the probe expects (n, {self.head.dim})")
        return out

    def predict(self, audio_or_paths, batch_size: int = 8, progress=None, channel: int | None = None,
                on_error: str = "raise") -> Predictions:
        """Score whole items: a path, a list of paths, a manifest (.csv/.tsv/.jsonl, ``start``/``end`` and
        ``channel`` honoured), or a float32 mono waveform ``(n_samples,)`` at ``sample_rate`` Hz (or a list of such).

        ``channel`` (0-based) keeps one channel of every file without a manifest channel of its own.
        ``on_error="raise"`` stops at the first input that cannot be scored; ``"skip"`` scores every good
        input and lists the bad ones in :attr:`Predictions.failed`.
        """
        parts = []
        for part in self.iter_predict(audio_or_paths, batch_size, channel, on_error):
            parts.append(part)
            if progress is not None:
                progress(len(part) + len(part.failed))
        n = len(self.labels)
        stack = lambda name, dtype, *shape: np.concatenate(  # noqa: E731
            [np.zeros((0, *shape), dtype)] + [getattr(p, name) for p in parts]).astype(dtype)
        return Predictions(tuple(i for p in parts for i in p.ids), stack("start", float), stack("end", float), self.labels,
                           stack("probabilities", float, n), stack("decisions", bool, n),
                           tuple(f for p in parts for f in p.failed))

    def iter_predict(self, audio_or_paths, batch_size: int = 8, channel: int | None = None,
                     on_error: str = "raise") -> Iterator[Predictions]:
        """:meth:`predict` one batch at a time, so a caller can write each batch out before the next is scored."""
        if on_error not in ("raise", "skip"):
            raise ScorerError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        items = self._items(audio_or_paths, channel)
        n = len(self.labels)
        for lo in range(0, len(items), batch_size):
            chunk, waves, failed = [], [], []
            for item in items[lo:lo + batch_size]:
                try:
                    waves.append(self._load(item))
                    chunk.append(item)
                except ScorerError as exc:
                    if on_error == "raise":
                        raise
                    failed.append((item.id, str(exc)))
            p, d = self.score_embeddings(self.embed(waves)) if waves else (np.zeros((0, n)), np.zeros((0, n), bool))
            # numpy reads a missing start or end (None: the whole file) as NaN.
            yield Predictions(tuple(i.id for i in chunk), np.asarray([i.start for i in chunk], float),
                              np.asarray([i.end for i in chunk], float), self.labels,
                              np.asarray(p, float).reshape(-1, n), np.asarray(d, bool).reshape(-1, n), tuple(failed))

    def timeline(self, path: str | Path, window: float, hop: float, **kwargs):
        """Windowed scores over a long recording, streamed in bounded memory; see :func:`probekit.deploy.timeline.score_timeline`."""
        from probekit.deploy.timeline import score_timeline

        return score_timeline(self, path, window, hop, **kwargs)

    # ------------------------------------------------------------------ inputs
    def _items(self, x, channel: int | None = None) -> list[_Item]:
        """Every input as an :class:`_Item`; a manifest's rows in order, its own channel before ``channel``."""
        if isinstance(x, np.ndarray):
            if x.ndim == 1:
                return [_Item("waveform_0", _check_wave(x, 0))]
            raise ScorerError(f"a waveform must be 1-D (n_samples,) mono at {self.sample_rate} Hz, got shape {x.shape}")
        if isinstance(x, (str, Path)):
            x = [x]
        items: list[_Item] = []
        for i, entry in enumerate(x):
            if isinstance(entry, np.ndarray):
                items.append(_Item(f"waveform_{i}", _check_wave(entry, i)))
                continue
            path = Path(entry)
            if path.suffix.lower() in _MANIFEST_SUFFIXES:
                from probekit.manifest import read_manifest

                # Files are checked when each row is loaded, so one missing file costs its row, not the batch.
                for seg in read_manifest(path, check_files=False, require_speaker=False).segments:
                    items.append(_Item(seg.id, Path(seg.path), seg.start, seg.end,
                                       seg.channel if seg.channel is not None else channel, f"{path}, line {seg.line}"))
            else:
                items.append(_Item(str(path), path, channel=channel))
        return items

    def _load(self, item: _Item) -> np.ndarray:
        # The same decoder, channel choice and resampler as `probekit extract`, so a file scores exactly as it was cached.
        from probekit.extract.audio import AudioError, load_segment

        if isinstance(item.source, np.ndarray):
            return item.source
        where = f"{item.source} ({item.where})" if item.where else str(item.source)
        if not Path(item.source).is_file():
            raise ScorerError(f"{where}: audio file not found")
        try:
            return load_segment(item.source, item.start, item.end, sample_rate=self.sample_rate,
                                min_samples=int(getattr(self.encoder, "min_samples", 0)), channel=item.channel)
        except (AudioError, OSError) as exc:
            raise ScorerError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class _Item:
    """One input: ``source`` is a Path or a waveform; ``start``/``end`` seconds; ``where`` names its manifest line."""

    id: str
    source: object
    start: float | None = None
    end: float | None = None
    channel: int | None = None
    where: str = ""


def _check_wave(x: np.ndarray, i: int) -> np.ndarray:
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ScorerError(f"waveform {i}: expected float mono (n_samples,), got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def load_scorer(model_dir: str | Path, device: str = "auto", encoder: EncoderLike | None = None,
                fast: bool = False) -> Scorer:
    """Verify and load an export folder (see :mod:`probekit.deploy.export`). The encoder loads lazily, truncated to
    the exported layer; pass ``encoder`` to reuse one already loaded. ``fast`` runs a Whisper export in Whisper's
    fast mode whatever mode it was trained in (not exact for a padded-mode export; see docs/predict.md)."""
    config, head = load_export(model_dir)
    for key in ("layer", "labels", "task", "encoder"):
        if key not in config:
            raise ExportError(f"{Path(model_dir) / 'config.json'}: missing {key!r}")
    scorer = Scorer(config, head, encoder=None, device=device, fast=fast)
    if encoder is not None:
        scorer._check_identity(encoder)
        scorer._encoder = encoder
    return scorer
