"""A deployable scorer: an export folder plus its encoder, run only up to the exported layer.

``load_scorer(dir).predict(audio_or_paths)`` mirrors ``probekit predict``; ``.timeline(path, window, hop)``
mirrors ``probekit predict --window S --hop S``.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from probekit.deploy.export import ExportError, Head, load_export, thresholds_for

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
    (NaN for a whole file or waveform). Multi-class decisions are one-hot on the most probable label."""

    ids: tuple[str, ...]
    start: np.ndarray
    end: np.ndarray
    labels: tuple[str, ...]
    probabilities: np.ndarray
    decisions: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def to_csv(self, path: str | Path) -> Path:
        """Columns: id, start_s, end_s, ``p_<label>`` for each label, ``<label>`` (0/1 decision) for each label."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "start_s", "end_s", *(f"p_{l}" for l in self.labels), *self.labels])
            for i, sid in enumerate(self.ids):
                w.writerow([sid, _fmt(self.start[i]), _fmt(self.end[i]),
                            *(f"{p:.6f}" for p in self.probabilities[i]), *(int(d) for d in self.decisions[i])])
        return path


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.3f}"


class Scorer:
    """Scores audio with an exported probe. Build with :func:`load_scorer`.

    ``layer``: hidden state index scored; ``labels``: output columns; ``thresholds``: ``(n_labels,)``
    decision thresholds (unused for multi-class); ``sample_rate``: Hz the encoder expects.
    """

    def __init__(self, config: dict, head: Head, encoder: EncoderLike | None = None, device: str = "auto"):
        self.config = config
        self.head = head
        self.layer = int(config["layer"])
        self.labels = tuple(str(l) for l in config["labels"])
        self.task = str(config["task"]["kind"])
        self.thresholds = thresholds_for(config, len(self.labels))
        self.pooling = str(config["encoder"].get("pooling", "mean"))
        self.sample_rate = int(config["encoder"].get("sample_rate", 16000))
        self._device = device
        self._encoder = encoder

    @property
    def encoder(self) -> EncoderLike:
        """The encoder, truncated after ``layer`` so deeper layers are never computed (loaded on first use)."""
        if self._encoder is None:
            from probekit.extract.encoders import EncoderSpec, load_encoder

            enc = self.config["encoder"]
            spec = EncoderSpec(model=enc["model"], revision=enc.get("revision") or None,
                               whisper_mode=enc.get("whisper_mode", "padded"), device=self._device, max_layer=self.layer)
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
        """``x`` ``(n, dim)`` pooled hidden state ``layer`` -> ``(probabilities, decisions)``, each ``(n, n_labels)``."""
        p = self.head.predict_proba(x)
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

    def predict(self, audio_or_paths, batch_size: int = 8, progress=None) -> Predictions:
        """Score whole items: a path, a list of paths, a manifest (.csv/.tsv/.jsonl, ``start``/``end`` honoured),
        or a float32 mono waveform ``(n_samples,)`` at ``sample_rate`` Hz (or a list of such)."""
        items = self._items(audio_or_paths)
        ids, starts, ends, probs, decs = [], [], [], [], []
        for lo in range(0, len(items), batch_size):
            chunk = items[lo:lo + batch_size]
            waves = [self._load(item) for item in chunk]
            p, d = self.score_embeddings(self.embed(waves))
            for item, pi, di in zip(chunk, p, d):
                ids.append(item[0])
                starts.append(item[2] if item[2] is not None else np.nan)
                ends.append(item[3] if item[3] is not None else np.nan)
                probs.append(pi)
                decs.append(di)
            if progress is not None:
                progress(len(chunk))
        n = len(self.labels)
        return Predictions(tuple(ids), np.asarray(starts, float), np.asarray(ends, float), self.labels,
                           np.asarray(probs, float).reshape(-1, n), np.asarray(decs, bool).reshape(-1, n))

    def timeline(self, path: str | Path, window: float, hop: float, **kwargs):
        """Windowed scores over a long recording, streamed in bounded memory; see :func:`probekit.deploy.timeline.score_timeline`."""
        from probekit.deploy.timeline import score_timeline

        return score_timeline(self, path, window, hop, **kwargs)

    # ------------------------------------------------------------------ inputs
    def _items(self, x) -> list[tuple]:
        """-> list of ``(id, source, start_s | None, end_s | None)``; source is a Path or a waveform."""
        if isinstance(x, np.ndarray):
            if x.ndim == 1:
                return [("waveform_0", _check_wave(x, 0), None, None)]
            raise ScorerError(f"a waveform must be 1-D (n_samples,) mono at {self.sample_rate} Hz, got shape {x.shape}")
        if isinstance(x, (str, Path)):
            x = [x]
        items: list[tuple] = []
        for i, entry in enumerate(x):
            if isinstance(entry, np.ndarray):
                items.append((f"waveform_{i}", _check_wave(entry, i), None, None))
                continue
            path = Path(entry)
            if path.suffix.lower() in _MANIFEST_SUFFIXES:
                from probekit.manifest import read_manifest

                for seg in read_manifest(path).segments:
                    items.append((seg.id, Path(seg.path), seg.start, seg.end))
            else:
                if not path.is_file():
                    raise ScorerError(f"{path}: audio file not found")
                items.append((str(path), path, None, None))
        return items

    def _load(self, item: tuple) -> np.ndarray:
        # The same decoder and resampler as `probekit extract`, so a file scores exactly as it was cached.
        from probekit.extract.audio import AudioError, load_segment

        _, source, start, end = item
        if isinstance(source, np.ndarray):
            return source
        try:
            return load_segment(source, start, end, sample_rate=self.sample_rate,
                                min_samples=int(getattr(self.encoder, "min_samples", 0)))
        except (AudioError, OSError) as exc:
            raise ScorerError(f"{source}: {exc}") from exc


def _check_wave(x: np.ndarray, i: int) -> np.ndarray:
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ScorerError(f"waveform {i}: expected float mono (n_samples,), got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def load_scorer(model_dir: str | Path, device: str = "auto", encoder: EncoderLike | None = None) -> Scorer:
    """Verify and load an export folder (see :mod:`probekit.deploy.export`). The encoder loads lazily, truncated to
    the exported layer; pass ``encoder`` to reuse one already loaded."""
    config, head = load_export(model_dir)
    for key in ("layer", "labels", "task", "encoder"):
        if key not in config:
            raise ExportError(f"{Path(model_dir) / 'config.json'}: missing {key!r}")
    scorer = Scorer(config, head, encoder=None, device=device)
    if encoder is not None:
        scorer._check_identity(encoder)
        scorer._encoder = encoder
    return scorer
