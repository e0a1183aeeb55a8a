"""Calibrated probabilities: expected calibration error, reliability bins, and a calibrator fitted on inner folds.

Binary and multilabel tasks (each label is a binary problem); docs/probe.md#calibration says why and
how to read them. :func:`reliability` bins probabilities in ``n_bins`` equal-width bins on [0, 1]:
``ECE = sum_b n_b / n * |mean_pred_b - observed_b|``, a multilabel ECE pooling every (row, label) pair.
:class:`ProbabilityCalibrator` maps a positive-class probability to a calibrated one, one map per label
(``temperature``: ``q = sigmoid(logit(p) / T)``, order-preserving; ``isotonic``: non-decreasing, linear
between knots, flat outside), its state plain numbers (JSON in an export's ``config.json``, no pickle).
:func:`fit_inner` fits it on the inner speaker folds of a training part
(:func:`probekit.probe.thresholds.inner_scores`), so the outer test fold never shapes it.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from probekit.choices import Calibration
from probekit.errors import ProbekitError
from probekit.oof import OOFPredictions
from probekit.probe.thresholds import inner_scores, thresholds_from_scores

METHODS = Calibration.names()
N_BINS = 10
_EPS = 1e-12  # logits of 0 and 1 are infinite; clip only that far, so distinct scores stay distinct


class CalibrationError(ProbekitError):
    """Calibration asked of a task or method it does not apply to; the message says what to change."""


def _columns(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return p[:, None] if p.ndim == 1 else p


def reliability(y_true, proba, n_bins: int = N_BINS) -> dict:
    """Reliability bins and ECE of positive-class probabilities.

    ``y_true``, ``proba``: ``(n,)`` or ``(n, k)`` ({0,1} truth, probability of 1); every (row,
    column) pair counts once; NaN probabilities (untested rows) are left out. Returns ``{ece,
    n, n_bins, bins: [{low, high, count, mean_predicted, observed}]}`` (empty bins have
    ``count`` 0 and ``None`` for the means).
    """
    p = _columns(proba).ravel()
    y = _columns(y_true).ravel()
    ok = np.isfinite(p)
    p, y = p[ok], y[ok]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    filled = count > 0
    mean_p = np.divide(sum_p, count, out=np.zeros(n_bins), where=filled)
    obs = np.divide(sum_y, count, out=np.zeros(n_bins), where=filled)
    ece = float((count * np.abs(mean_p - obs)).sum() / count.sum()) if count.sum() else float("nan")
    bins = [
        {
            "low": float(edges[b]),
            "high": float(edges[b + 1]),
            "count": int(count[b]),
            "mean_predicted": float(mean_p[b]) if filled[b] else None,
            "observed": float(obs[b]) if filled[b] else None,
        }
        for b in range(n_bins)
    ]
    return {"ece": ece, "n": int(ok.sum()), "n_bins": n_bins, "bins": bins}


def expected_calibration_error(y_true, proba, n_bins: int = N_BINS) -> float:
    """ECE of positive-class probabilities (see :func:`reliability`)."""
    return reliability(y_true, proba, n_bins)["ece"]


def calibration_summary(oof: OOFPredictions, layer: int, n_bins: int = N_BINS) -> dict:
    """Reliability of one layer's out-of-fold probabilities: :func:`reliability` over the tested rows,
    plus ``per_label: {label: ece}`` for multilabel. Binary and multilabel only."""
    if oof.kind not in ("binary", "multilabel"):
        raise CalibrationError(f"{oof.encoder}/{oof.probe}: calibration is measured for binary and multilabel tasks, not {oof.kind}")
    i = oof.layer_index(layer)
    rows = oof.tested
    proba = oof.proba[i][rows]
    y = _columns(oof.y_true[rows])
    out = {"layer": int(layer), **reliability(y, proba, n_bins)}
    if oof.kind == "multilabel":
        out["per_label"] = {c: expected_calibration_error(y[:, j], proba[:, j], n_bins) for j, c in enumerate(oof.classes)}
    return out


def annotate_calibration(doc: dict, oofs: list[OOFPredictions], n_bins: int = N_BINS) -> dict:
    """A copy of results document ``doc`` whose ``best`` entries carry ``calibration`` (the
    :func:`calibration_summary` of the best layer), for binary and multilabel tasks with their
    out-of-fold files; other documents come back unchanged (as a copy)."""
    by_key = {(o.encoder, o.probe): o for o in oofs}
    out = {**doc, "best": [dict(b) for b in doc["best"]]}
    if doc["task"]["kind"] not in ("binary", "multilabel"):
        return out
    for b in out["best"]:
        oof = by_key.get((b["encoder"], b["probe"]))
        if oof is not None and b["layer"] in oof.layers.tolist():
            b["calibration"] = calibration_summary(oof, b["layer"], n_bins)
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    z = _logit(p)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        # -log sigmoid(s) for positives, -log sigmoid(-s) for negatives, stably.
        return float(np.mean(np.logaddexp(0.0, np.where(y == 1, -s, s))))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def _fit_isotonic(p: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()


class ProbabilityCalibrator(BaseEstimator):
    """Maps positive-class probabilities to calibrated ones, one map per column (label).

    ``method``: ``"temperature"`` or ``"isotonic"``. ``fit(proba, y)``: ``(n,)`` or ``(n, k)``
    probabilities and {0,1} truth (rows with NaN are skipped); ``transform(proba)`` returns the same
    shape. Fitted state, plain numbers only: ``temperature_`` ``[k floats]`` or ``knots_`` ``[k x
    ([x...], [y...])]``. A column with a single class in the fitting rows keeps its probabilities
    (temperature 1, identity knots). :meth:`to_config`/:meth:`from_config` give and take that state
    as a JSON-ready dict.
    """

    def __init__(self, method: str = "temperature"):
        self.method = method

    def fit(self, proba, y):
        if self.method not in METHODS:
            raise CalibrationError(f"unknown calibration '{self.method}': use one of {', '.join(METHODS)}")
        P, Y = _columns(proba), _columns(y)
        self.n_columns_ = P.shape[1]
        temps, knots = [], []
        for j in range(P.shape[1]):
            ok = np.isfinite(P[:, j])
            p, t = P[ok, j], Y[ok, j]
            single = len(t) == 0 or t.min() == t.max()
            if self.method == "temperature":
                temps.append(1.0 if single else _fit_temperature(p, t))
            else:
                knots.append(([0.0, 1.0], [0.0, 1.0]) if single else _fit_isotonic(p, t))
        if self.method == "temperature":
            self.temperature_ = temps
        else:
            self.knots_ = knots
        return self

    def transform(self, proba) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        P = _columns(proba)
        if P.shape[1] != self.n_columns_:
            raise CalibrationError(f"the calibrator was fitted on {self.n_columns_} column(s), got {P.shape[1]}")
        out = np.empty_like(P)
        for j in range(P.shape[1]):
            if self.method == "temperature":
                out[:, j] = 1.0 / (1.0 + np.exp(-_logit(P[:, j]) / self.temperature_[j]))
            else:
                out[:, j] = np.interp(P[:, j], *self.knots_[j])
        out[np.isnan(P)] = np.nan
        return out[:, 0] if proba.ndim == 1 else out

    def to_config(self) -> dict:
        """The fitted state as plain JSON numbers: ``{method, columns, temperature | knots}``."""
        state = {"method": self.method, "columns": int(self.n_columns_)}
        if self.method == "temperature":
            state["temperature"] = [float(t) for t in self.temperature_]
        else:
            state["knots"] = [{"x": [float(v) for v in xs], "y": [float(v) for v in ys]} for xs, ys in self.knots_]
        return state

    @classmethod
    def from_config(cls, state: dict) -> "ProbabilityCalibrator":
        """A fitted calibrator from :meth:`to_config`'s dict; raises :class:`CalibrationError` for a malformed one."""
        try:
            cal = cls(method=str(state["method"]))
            cal.n_columns_ = int(state["columns"])
            if cal.method == "temperature":
                cal.temperature_ = [float(t) for t in state["temperature"]]
                n = len(cal.temperature_)
            elif cal.method == "isotonic":
                cal.knots_ = [([float(v) for v in k["x"]], [float(v) for v in k["y"]]) for k in state["knots"]]
                n = len(cal.knots_)
            else:
                raise CalibrationError(f"unknown calibration '{cal.method}' in the export's config; use one of {', '.join(METHODS)}")
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"the export's 'calibration' block is malformed ({exc}); re-export the probe") from None
        if n != cal.n_columns_:
            raise CalibrationError(f"the export's 'calibration' block has {n} maps for {cal.n_columns_} columns; re-export the probe")
        return cal


def calibrate_proba(calibrator: ProbabilityCalibrator, kind: str, proba: np.ndarray) -> np.ndarray:
    """Apply ``calibrator`` to a probe's ``predict_proba`` output, keeping its column conventions:
    binary ``(n, 2)`` -> column 1 calibrated, column 0 its complement; multilabel ``(n, k)`` per label."""
    proba = np.asarray(proba, dtype=np.float64)
    if kind == "binary":
        pos = calibrator.transform(proba[:, 1])
        return np.stack([1.0 - pos, pos], 1)
    if kind == "multilabel":
        return calibrator.transform(proba)
    raise CalibrationError(f"calibration applies to binary and multilabel tasks, not {kind}")


def fit_inner(
    probe, X: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str, *, calibrate: str | None = None, tune: bool = False,
    n_inner: int = 3, seed: int = 0,
) -> tuple[ProbabilityCalibrator | None, np.ndarray | None]:
    """One pass of inner speaker folds over a TRAINING part gives both a calibrator and thresholds.

    ``calibrate``: ``None`` | ``"temperature"`` | ``"isotonic"``; ``tune``: F1-optimal thresholds.
    Thresholds are tuned on the *calibrated* inner scores, since they are applied to calibrated
    scores. Returns ``(calibrator or None, thresholds (k,) or None)``; with fewer than two training
    speakers the calibrator is the identity and thresholds are 0.5.
    """
    if calibrate is not None and kind not in ("binary", "multilabel"):
        raise CalibrationError(f"--calibrate applies to binary and multilabel tasks; a {kind} probe predicts the most probable class")
    if calibrate is None and not tune:
        return None, None
    scores = inner_scores(probe, X, y, groups, kind, n_inner, seed)
    cal = None
    if calibrate is not None:
        cal = ProbabilityCalibrator(calibrate).fit(scores, y.reshape(len(y), -1))
        scores = cal.transform(scores)
    return cal, (thresholds_from_scores(y, scores) if tune else None)


__all__ = [
    "METHODS", "CalibrationError", "ProbabilityCalibrator", "annotate_calibration", "calibrate_proba", "calibration_summary",
    "expected_calibration_error", "fit_inner", "reliability",
]
