"""Decision thresholds tuned for F1 on inner, speaker-grouped folds of the training part.

The outer test fold never reaches these functions: they get only the training rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.metrics import precision_recall_curve

from probekit.probe.probes import fit_probe
from probekit.probe.splits import make_folds


def f1_optimal_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """Score threshold maximising F1 of the positive class (0.5 when ``y_true`` has no positives)."""
    y_true = np.asarray(y_true)
    if y_true.min() == y_true.max():
        return 0.5
    prec, rec, thr = precision_recall_curve(y_true, score)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(prec), where=(prec + rec) > 0)[:-1]
    best = int(np.argmax(f1))
    # Midway to the next lower score, so the threshold generalises rather than sitting on a training score.
    lower = np.asarray(score)[np.asarray(score) < thr[best]]
    return float((thr[best] + lower.max()) / 2) if len(lower) else float(thr[best])


def inner_scores(probe, X: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str, n_inner: int = 3, seed: int = 0) -> np.ndarray:
    """Out-of-fold positive scores ``(n, k)`` of inner speaker-grouped folds of ``X``/``y`` (binary:
    k = 1), NaN for rows no inner fold scored (all rows, with fewer than two training speakers).

    ``X``, ``y``, ``groups``: the TRAINING part of an outer fold only; thresholds and calibration
    are fitted on these scores, so the outer test fold never shapes them.
    """
    k = 1 if kind == "binary" else y.shape[1]
    scores = np.full((len(y), k), np.nan)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        return scores
    inner = make_folds("speaker-kfold", groups, y, n_folds=min(n_inner, n_groups), seed=seed)
    for train, val in inner:
        yt = y[train]
        if kind == "binary" and yt.min() == yt.max():
            continue
        est = fit_probe(clone(probe), X[train], yt, groups[train])
        proba = est.predict_proba(X[val])
        scores[val] = (proba[:, 1] if kind == "binary" else proba).reshape(len(val), k)
    return scores


def thresholds_from_scores(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """F1-optimal threshold per column of inner ``scores`` ``(n, k)`` (rows with NaN skipped); 0.5 where none."""
    done = ~np.isnan(scores[:, 0])
    yk = y.reshape(len(y), -1)
    return np.array([f1_optimal_threshold(yk[done, j], scores[done, j]) if done.any() else 0.5 for j in range(scores.shape[1])])
