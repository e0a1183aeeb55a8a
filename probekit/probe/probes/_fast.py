"""Pieces the fast probes share: the inner early-stopping split, the per-fold projection, fold bookkeeping.

Everything here sees one training part at a time. A fast probe's ``fold_proba`` calls the same
functions on ``X[train]`` that its ``fit`` calls on the whole of its input, so the batched path and
the single-fold path fit the same model (and no test row can reach a projection or a stopping rule).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
from sklearn.utils.class_weight import compute_sample_weight

from probekit.probe.probes._base import Probe, local_classes
from probekit.probe.tasks import class_columns

# PCA covariances come from at most this many evenly spaced training rows: 8192 rows estimate the top
# few hundred axes of a 1024-dim layer well, and cost a quarter of the 20,630-row product.
PCA_MAX_ROWS = 8192
# Every PCA solves at least this many leading axes and keeps the ones asked for, so a projection to fewer
# axes (lgbm's 64) is the leading part of a larger one (mlp's 128) whether or not the solution was shared.
PCA_SOLVED_AXES = 128

# Within :func:`shared_projections`: the PCA solutions of the training parts seen so far, by content.
_SOLVED: ContextVar[dict | None] = ContextVar("probekit_solved_pca", default=None)


@contextmanager
def shared_projections() -> Iterator[None]:
    """Within this block :func:`fit_projection` solves the PCA of each distinct training part once: the
    probes of one layer (``mlp`` and ``lgbm`` both project every fold's training part) share it. A
    solution is found again only for the very same rows (their bytes are hashed), and it is what a fresh
    solve would give, so nothing changes but the time. The memo ends with the block."""
    token = _SOLVED.set({})
    try:
        yield
    finally:
        _SOLVED.reset(token)


def inner_split(n: int, groups, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Positions ``(fit, val)`` within one training part of ``n`` rows, and how they were drawn.

    About ``val_fraction`` of the rows go to ``val`` (early stopping only). With ``groups`` (``(n,)``
    speaker per row) whole speakers are held out, drawn in a seeded random order until the share is
    reached, so a speaker is never on both sides; without them, rows. ``val`` is empty when the part
    is too small to spare rows (fewer than 2 speakers, or fewer than 20 rows).
    """
    rng = np.random.default_rng(seed)
    everything = np.arange(n)
    if val_fraction <= 0 or n < 20:
        return everything, everything[:0], "none (training part too small)"
    if groups is not None:
        groups = np.asarray(groups)
        speakers, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        if len(speakers) < 2:
            return everything, everything[:0], "none (one speaker in the training part)"
        order = rng.permutation(len(speakers))
        take = np.searchsorted(np.cumsum(counts[order]), val_fraction * n) + 1
        held = order[: min(take, len(speakers) - 1)]
        val = np.isin(inverse, held)
        return everything[~val], everything[val], f"{len(held)} of {len(speakers)} training speakers ({val.mean():.0%} of rows)"
    n_val = max(1, int(round(val_fraction * n)))
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val]), f"{n_val} random training rows (no speaker groups given)"


def sample_weight(y: np.ndarray, class_weight) -> np.ndarray | None:
    """Per-row weights for ``class_weight="balanced"`` (``None`` otherwise), as scikit-learn computes them."""
    if class_weight is None:
        return None
    if class_weight != "balanced":
        raise ValueError(f"class_weight must be None or 'balanced', not {class_weight!r}")
    return compute_sample_weight("balanced", y).astype(np.float32)


@dataclass(frozen=True)
class Projection:
    """Standardise, then project onto the leading principal axes of the standardised training rows, whitened.

    ``transform(X)`` = ``X @ weight - offset``: ``(n, d)`` -> ``(n, r)`` float32 with unit variance per
    axis on the training rows. ``explained``: share of the standardised variance the ``r`` axes keep
    (1.0 when ``r`` = ``d``, i.e. no reduction).
    """

    weight: np.ndarray  # (d, r) float32
    offset: np.ndarray  # (r,) float32
    explained: float

    @property
    def dims(self) -> int:
        return self.weight.shape[1]

    def transform(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float32) @ self.weight - self.offset


@dataclass(frozen=True)
class _PCA:
    """A training part's standardisation ``mean``/``sd`` ``(d,)`` and its leading axes: ``evals`` ``(a,)``
    descending, ``evecs`` ``(d, a)`` sign-fixed (``a`` = 0: standardisation only), ``trace`` of the
    correlation matrix."""

    mean: np.ndarray
    sd: np.ndarray
    evals: np.ndarray
    evecs: np.ndarray
    trace: float


def _solve_pca(X: np.ndarray, axes: int) -> _PCA:
    import scipy.linalg

    n, d = X.shape
    # Sums around a provisional centre keep float32 precise where a dimension's mean dwarfs its spread.
    centre = X[: min(n, 256)].mean(0)
    D = X - centre
    shift = D.sum(0, dtype=np.float64) / n
    var = np.einsum("ij,ij->j", D, D, dtype=np.float64) / n - shift**2
    del D
    mean = centre + shift
    sd = np.sqrt(np.maximum(var, 0.0))
    sd = np.where(sd < 1e-6 * (1.0 + np.abs(mean)), 1.0, sd)
    if axes == 0:  # standardisation only
        return _PCA(mean, sd, np.empty(0), np.empty((d, 0)), float(d))
    pick = np.linspace(0, n - 1, min(n, PCA_MAX_ROWS)).astype(np.int64) if n > PCA_MAX_ROWS else slice(None)
    S = (X[pick] - mean.astype(np.float32)) / sd.astype(np.float32)
    cov = (S.T @ S).astype(np.float64) / max(1, len(S))
    # Only the leading axes are needed: a subset solve costs half of a full eigendecomposition.
    evals, evecs = scipy.linalg.eigh(cov, subset_by_index=[d - axes, d - 1], driver="evr")
    evals, evecs = evals[::-1], evecs[:, ::-1]
    evecs = evecs * np.sign(evecs[np.abs(evecs).argmax(0), np.arange(axes)])
    return _PCA(mean, sd, evals, evecs, float(np.trace(cov)))


def fit_projection(X, dims: int | None) -> Projection:
    """PCA of the training rows ``X`` ``(n, d)`` (float32; float16 is converted) to ``dims`` whitened axes.

    ``dims`` None or ``>= d``: standardisation only. The mean and scale come from every row of ``X``;
    the correlation matrix from at most :data:`PCA_MAX_ROWS` evenly spaced rows of it. At least
    :data:`PCA_SOLVED_AXES` axes are solved and the leading ``dims`` kept. Axis signs are fixed (largest
    loading positive), so equal input gives equal output. Inside :func:`shared_projections` a part's
    solution is reused.
    """
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    whole = dims is None or dims >= d
    axes = 0 if whole else min(d, max(int(dims), PCA_SOLVED_AXES))
    memo = _SOLVED.get()
    key = None if memo is None else (X.shape, axes, hashlib.sha1(np.ascontiguousarray(X).data).digest())
    pca = None if memo is None else memo.get(key)
    if pca is None:
        pca = _solve_pca(X, axes)
        if memo is not None:
            memo[key] = pca
    mean, sd = pca.mean, pca.sd
    if whole:
        weight = np.diag(1.0 / sd).astype(np.float32)
        return Projection(weight, (mean / sd).astype(np.float32), 1.0)
    evals, evecs = pca.evals[:dims], pca.evecs[:, :dims]
    scale = 1.0 / np.sqrt(np.maximum(evals, 1e-6 * max(evals[0], 1e-12)))
    weight = evecs / sd[:, None] * scale[None, :]
    offset = mean @ weight
    explained = float(np.clip(evals, 0, None).sum() / max(pca.trace, 1e-12))
    return Projection(weight.astype(np.float32), offset.astype(np.float32), explained)


class FastProbe(Probe):
    """Base of the fast probes: one code path fits one training part, for ``fit`` and for every fold of
    ``fold_proba``, so the two agree; subclasses batch inside ``_fit_fast``.

    Subclasses set ``_exact`` (the reference probe class, used whole on training parts of fewer than
    ``fast_min_rows`` rows, where it is cheap and the shortcuts have too few rows to be safe) and
    ``_exact_solver`` (what it runs, for the reports), and implement ``_fit_fast(X, y, trains, groups) ->
    [(model, report), ...]`` for the other parts; a model is the fitted reference probe or the fast path's
    fitted state, and its ``predict_proba`` gives columns over the part's present classes, or ``(n, k)``
    for multi-label. ``model_`` holds it after ``fit``.
    """

    _exact: type | None = None
    _exact_solver = ""

    def _exact_probe(self):
        """The reference probe with this probe's shared parameters (see :attr:`_exact`)."""
        names = self._exact._get_param_names()
        return self._exact(**{k: v for k, v in self.get_params().items() if k in names})

    def _fit_parts(self, X, y, trains, groups) -> list[tuple]:
        """``(model, report)`` per training part (row positions ``trains[i]``); ``groups``: ``(n,)`` or None."""
        g = None if groups is None else np.asarray(groups)
        out: list = [None] * len(trains)
        fast = []
        for i, tr in enumerate(trains):
            if len(tr) >= self.fast_min_rows:
                fast.append(i)
                continue
            report = {"solver": f"{self._exact_solver}, exact reference ({self._exact.__name__})",
                      "reason": f"{len(tr)} training rows < fast_min_rows={self.fast_min_rows}"}
            out[i] = (self._exact_probe().fit(X[tr], y[tr]), report)
        for i, fitted in zip(fast, self._fit_fast(X, y, [trains[i] for i in fast], g)):
            out[i] = fitted
        return out

    def fit(self, X, y, groups=None):
        """Fit on ``X`` ``(n, d)`` (float16/float32), ``y`` ``(n,)`` or ``(n, k)``; ``groups``: ``(n,)`` speakers
        for a speaker-grouped inner early-stopping split (rows at random without them)."""
        y = np.asarray(y)
        self.multilabel_ = y.ndim == 2
        self.classes_ = np.arange(y.shape[1]) if self.multilabel_ else local_classes(y)[0]
        (model, report), = self._fit_parts(X, y, [np.arange(len(y))], groups)
        self.model_, self.report_ = model, report
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(X)

    def fold_proba(self, X, y, folds, groups=None) -> list[np.ndarray]:
        """Per fold, what ``clone(self).fit(X[train], y[train], groups[train]).predict_proba(X[test])`` gives,
        with columns over every class index ``0..y.max()`` for 1-D ``y`` (0 for a class absent from the
        training part). Sets ``fold_reports_`` (one dict per fold)."""
        y = np.asarray(y)
        folds = [(np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)) for tr, te in folds]
        fitted = self._fit_parts(X, y, [tr for tr, _ in folds], groups)
        out = []
        for (tr, te), (model, _rep) in zip(folds, fitted):
            p = model.predict_proba(X[te])
            if y.ndim == 1:  # columns over the part's present classes -> every class index (0 if absent)
                p = class_columns(p, np.unique(y[tr]), int(y.max()) + 1)
            out.append(p)
        self.fold_reports_ = [rep for _m, rep in fitted]
        return out
