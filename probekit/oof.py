"""Out-of-fold predictions: every (encoder, probe)'s per-layer test-fold outputs, saved beside results.json.

Paired layer comparisons, calibration and any later re-analysis read these instead of refitting.

File format: ``<results folder>/oof/<encoder>__<probe>.npz``, a plain NumPy archive (no object arrays,
loaded with ``allow_pickle=False``; no audio, only ids, labels and scores)::

    format       ()            str   "probekit-oof"
    version      ()            int   1
    encoder      ()            str   the encoder's display name (as in results.json rows)
    probe        ()            str   the probe name
    kind         ()            str   binary | multiclass | multilabel
    classes      (k,)          str   binary: ("not <positive>", "<positive>"); multiclass: the classes; multilabel: the labels
    ids          (n,)          str   cache row ids of the rows used, in cache order
    speaker      (n,)          str   speaker of each row
    fold         (n,)          int16 index of the outer fold whose test part holds the row; -1: never tested
    y_true       (n,) | (n, k) int   binary: 0/1; multiclass: class index; multilabel: 0/1 indicator
    layers       (L,)          int   hidden-state index of each entry; -1 stands for "all layers" (a layer-weighted probe)
    proba        (L, n, c)     float32 binary: c = 1, P(positive); multiclass: c = k class probabilities;
                                     multilabel: c = k label probabilities. NaN for rows never tested
    pred         (L, n) | (L, n, k) int8 the decisions the metrics were computed from (thresholds applied)

Rows a protocol never tests (e.g. the ``train`` rows of ``--cv split``) have ``fold == -1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probekit.errors import ProbekitError

FORMAT = "probekit-oof"
VERSION = 1
ALL_LAYERS = -1


class OOFError(ProbekitError):
    """An out-of-fold file is missing, of another format, or inconsistent; the message names the file."""


@dataclass(frozen=True)
class OOFPredictions:
    """One (encoder, probe)'s out-of-fold outputs; array shapes as in the module docstring."""

    encoder: str
    probe: str
    kind: str
    classes: tuple[str, ...]
    ids: np.ndarray
    speaker: np.ndarray
    fold: np.ndarray
    y_true: np.ndarray
    layers: np.ndarray
    proba: np.ndarray
    pred: np.ndarray

    def layer_index(self, layer: int) -> int:
        """Position of hidden state ``layer`` in ``layers``; raises :class:`OOFError` if absent."""
        hits = np.flatnonzero(self.layers == layer)
        if not len(hits):
            raise OOFError(f"{self.encoder}/{self.probe}: no out-of-fold predictions for layer {layer} (have {self.layers.tolist()})")
        return int(hits[0])

    @property
    def tested(self) -> np.ndarray:
        """``(n,)`` bool: rows that some outer test fold holds."""
        return self.fold >= 0

    def score(self, layer: int) -> np.ndarray:
        """The scores metrics use for ``layer``: binary ``(n,)`` P(positive); otherwise ``(n, k)``."""
        p = self.proba[self.layer_index(layer)]
        return p[:, 0] if self.kind == "binary" else p


def save_oof(folder: str | Path, oof: OOFPredictions) -> Path:
    """Write ``oof`` as ``folder/<encoder>__<probe>.npz`` (anything but letters, digits, ``.``, ``-`` and
    ``_`` in the name replaced by ``_``); returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", f"{oof.encoder}__{oof.probe}") + ".npz")
    np.savez_compressed(
        path,
        format=np.array(FORMAT),
        version=np.array(VERSION),
        encoder=np.array(oof.encoder),
        probe=np.array(oof.probe),
        kind=np.array(oof.kind),
        classes=np.array(list(oof.classes), dtype=str),
        ids=np.asarray(oof.ids).astype(str),
        speaker=np.asarray(oof.speaker).astype(str),
        fold=np.asarray(oof.fold, dtype=np.int16),
        y_true=np.asarray(oof.y_true),
        layers=np.asarray(oof.layers, dtype=np.int64),
        proba=np.asarray(oof.proba, dtype=np.float32),
        pred=np.asarray(oof.pred, dtype=np.int8),
    )
    return path


def load_oof(path: str | Path) -> OOFPredictions:
    """Read an out-of-fold file without unpickling anything; checks format, version and shapes."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise OOFError(f"{path}: out-of-fold file not found; rerun `probekit probe` to write it") from None
    except (OSError, ValueError) as exc:
        raise OOFError(f"{path}: not a readable out-of-fold file ({exc})") from None
    if str(data.get("format", "")) != FORMAT:
        raise OOFError(f"{path}: not a probekit out-of-fold file")
    if int(data.get("version", 0)) > VERSION:
        raise OOFError(f"{path}: out-of-fold format version {int(data['version'])} is newer than this probekit reads ({VERSION}); upgrade probekit")
    oof = OOFPredictions(
        encoder=str(data["encoder"]), probe=str(data["probe"]), kind=str(data["kind"]),
        classes=tuple(str(c) for c in data["classes"]), ids=data["ids"], speaker=data["speaker"], fold=data["fold"],
        y_true=data["y_true"], layers=data["layers"], proba=data["proba"], pred=data["pred"],
    )
    n, n_layers = len(oof.ids), len(oof.layers)
    if oof.proba.shape[:2] != (n_layers, n) or oof.pred.shape[:2] != (n_layers, n) or len(oof.y_true) != n or len(oof.fold) != n:
        raise OOFError(f"{path}: inconsistent shapes (ids {n}, layers {n_layers}, proba {oof.proba.shape}, pred {oof.pred.shape})")
    return oof


__all__ = ["ALL_LAYERS", "OOFError", "OOFPredictions", "load_oof", "save_oof"]
