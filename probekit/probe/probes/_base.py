"""Shared machinery of the probes: ``predict`` and the class check of every probe, and the exact probes'
pipeline: standardise on the training rows, then classify (multi-label targets, a 2-D ``{0,1}``
indicator, one-vs-rest: one binary classifier per label).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight


def local_classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(present, y_local)``: the class indices present in a 1-D ``y`` and ``y`` renumbered 0..c-1."""
    present, local = np.unique(y, return_inverse=True)
    if len(present) < 2:
        raise ValueError(f"the training rows hold a single class ({present[0]}); a probe needs two or more")
    return present, local


class Probe(ClassifierMixin, BaseEstimator):
    """Base of the probes whose ``fit`` sets ``classes_`` and ``multilabel_``: ``predict`` is the most
    probable class, or every label of probability 0.5 or more."""

    def predict(self, X):
        proba = self.predict_proba(X)
        if self.multilabel_:
            return (proba >= 0.5).astype(np.int64)
        return self.classes_[np.argmax(proba, axis=1)]


class ScaledProbe(Probe):
    """Base: subclasses implement ``_classifier()`` returning an unfitted sklearn classifier.

    ``fit(X (n, d), y (n,) or (n, k))``; ``predict_proba`` gives ``(n, n_classes)`` for 1-D targets and
    ``(n, k)`` positive-label probabilities for multi-label targets.
    """

    # Classifiers that take class_weight natively; the rest get balanced sample weights in fit.
    _native_class_weight = True
    # Classifiers that fit a {0,1} indicator matrix in one model; the rest go one-vs-rest.
    _native_multilabel = False

    def _fit_one(self, X, y):
        pipe = make_pipeline(StandardScaler(), self._classifier())
        kw = {}
        if self.class_weight == "balanced" and not self._native_class_weight:
            kw = {f"{pipe.steps[-1][0]}__sample_weight": compute_sample_weight("balanced", y)}
        with warnings.catch_warnings():
            # An unconverged probe is still a valid measurement at its iteration budget; the budget is a parameter.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return pipe.fit(X, y, **kw)

    def fit(self, X, y, groups=None):
        """``groups`` (speakers) is accepted for the probe contract; the exact probes do not use it."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        self.multilabel_ = y.ndim == 2
        if self.multilabel_ and self._native_multilabel:
            self.estimator_ = self._fit_one(X, y)
            self.classes_ = np.arange(y.shape[1])
        elif self.multilabel_:
            self.estimators_ = []
            for j in range(y.shape[1]):
                col = y[:, j]
                if col.min() == col.max():
                    # A label absent (or always present) in this training part: predict its constant rate.
                    self.estimators_.append(float(col[0]))
                else:
                    self.estimators_.append(self._fit_one(X, col))
            self.classes_ = np.arange(y.shape[1])
        else:
            self.classes_ = local_classes(y)[0]
            self.estimator_ = self._fit_one(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        if self.multilabel_ and self._native_multilabel:
            return self.estimator_.predict_proba(X)
        if self.multilabel_:
            out = np.empty((len(X), len(self.estimators_)))
            for j, est in enumerate(self.estimators_):
                out[:, j] = est if isinstance(est, float) else est.predict_proba(X)[:, 1]
            return out
        return self.estimator_.predict_proba(X)
