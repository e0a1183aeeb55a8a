"""Calibration: ECE and reliability bins, temperature/isotonic calibrators with plain-number state, inner-fold fitting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from probekit.probe.calibration import (
    CalibrationError,
    ProbabilityCalibrator,
    annotate_calibration,
    calibrate_proba,
    calibration_summary,
    expected_calibration_error,
    fit_inner,
    reliability,
)
from probekit.probe.probes import make_probe
from tests._oof import oof_predictions


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _overconfident(n=4000, factor=3.0, seed=0):
    """Truth drawn from a calibrated probability ``p``; the "probe" reports ``sigmoid(factor * logit p)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=n)
    y = (rng.random(n) < _sigmoid(z)).astype(int)
    return _sigmoid(factor * z), y, _sigmoid(z)


def test_ece_by_hand():
    # bins of width 0.5: {0.2, 0.4} -> mean 0.3, observed 0.5; {0.9} -> 0.9 vs 1; ECE = (2*0.2 + 1*0.1) / 3
    r = reliability(np.array([0, 1, 1]), np.array([0.2, 0.4, 0.9]), n_bins=2)
    assert r["ece"] == pytest.approx(0.5 / 3)
    assert [b["count"] for b in r["bins"]] == [2, 1]
    assert r["bins"][0]["mean_predicted"] == pytest.approx(0.3) and r["bins"][0]["observed"] == pytest.approx(0.5)
    empty = reliability(np.array([1]), np.array([1.0]), n_bins=4)["bins"]
    assert empty[0]["count"] == 0 and empty[0]["observed"] is None and empty[3]["count"] == 1  # 1.0 falls in the top bin


def test_calibrated_scores_have_small_ece_and_overconfident_ones_large():
    p_bad, y, p_true = _overconfident()
    assert expected_calibration_error(y, p_true) < 0.03
    assert expected_calibration_error(y, p_bad) > 0.08


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_a_calibrator_repairs_overconfidence_on_fresh_rows(method):
    p_bad, y, _ = _overconfident(seed=0)
    q_bad, yq, _ = _overconfident(seed=1)
    cal = ProbabilityCalibrator(method).fit(p_bad, y)
    assert expected_calibration_error(yq, cal.transform(q_bad)) < 0.03
    if method == "temperature":
        assert cal.temperature_[0] == pytest.approx(3.0, rel=0.1)
        # order kept: the ranking (and so ROC-AUC) is unchanged
        assert roc_auc_score(yq, cal.transform(q_bad)) == roc_auc_score(yq, q_bad)


def test_isotonic_map_equals_scikit_learns():
    p_bad, y, _ = _overconfident(n=500)
    cal = ProbabilityCalibrator("isotonic").fit(p_bad, y)
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p_bad, y)
    grid = np.linspace(0, 1, 201)
    assert np.allclose(cal.transform(grid), ref.predict(grid))


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_state_is_plain_json_and_round_trips(method):
    p_bad, y, _ = _overconfident(n=600)
    P = np.stack([p_bad, 1 - p_bad], 1)
    Y = np.stack([y, 1 - y], 1)
    cal = ProbabilityCalibrator(method).fit(P, Y)
    state = json.loads(json.dumps(cal.to_config()))
    again = ProbabilityCalibrator.from_config(state)
    assert np.array_equal(again.transform(P), cal.transform(P))
    with pytest.raises(CalibrationError, match="malformed"):
        ProbabilityCalibrator.from_config({"method": method})
    with pytest.raises(CalibrationError, match="2 column"):
        cal.transform(p_bad)


def test_single_class_column_is_left_alone_and_nan_stays_nan():
    cal = ProbabilityCalibrator("temperature").fit(np.array([[0.2, 0.3], [0.7, 0.8]]), np.array([[0, 1], [1, 1]]))
    out = cal.transform(np.array([[0.2, 0.3], [np.nan, 0.6]]))
    assert out[0, 1] == pytest.approx(0.3) and out[1, 1] == pytest.approx(0.6) and np.isnan(out[1, 0])
    with pytest.raises(CalibrationError, match="unknown calibration"):
        ProbabilityCalibrator("platt").fit([0.5], [1])


def test_binary_columns_stay_complementary():
    cal = ProbabilityCalibrator("temperature").fit(*_overconfident(n=300)[:2])
    out = calibrate_proba(cal, "binary", np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert np.allclose(out.sum(1), 1) and out[1, 1] < 0.8
    with pytest.raises(CalibrationError):
        calibrate_proba(cal, "multiclass", np.eye(3))


def _speaker_data(n_speakers=12, per=30, d=40, seed=0):
    rng = np.random.default_rng(seed)
    n = n_speakers * per
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 0.8 * (2 * y - 1)
    return X, y, np.repeat([f"s{i}" for i in range(n_speakers)], per)


def test_inner_fitted_calibration_lowers_ece_of_an_overconfident_probe_on_held_out_speakers():
    X, y, spk = _speaker_data()
    probe = make_probe("logreg", C=100.0)  # weakly regularised on 40 dims: overconfident
    train, test = spk < "s8", spk >= "s8"
    cal, thr = fit_inner(probe, X[train], y[train], spk[train], "binary", calibrate="temperature", tune=True)
    raw = probe.fit(X[train], y[train]).predict_proba(X[test])[:, 1]
    assert cal.temperature_[0] > 1.5
    assert expected_calibration_error(y[test], cal.transform(raw)) < expected_calibration_error(y[test], raw)
    assert thr.shape == (1,)
    assert fit_inner(probe, X, y, spk, "binary") == (None, None)
    with pytest.raises(CalibrationError, match="multiclass"):
        fit_inner(probe, X, y, spk, "multiclass", calibrate="isotonic")


def test_summary_and_document_annotation_at_the_best_layer():
    X, y, spk = _speaker_data(d=6)
    X3 = np.stack([np.random.default_rng(1).normal(size=X.shape), X], 1)
    oof = oof_predictions(X3, y, spk, "binary", make_probe("logreg"))
    s = calibration_summary(oof, 1)
    assert s["layer"] == 1 and 0 <= s["ece"] < 0.5 and sum(b["count"] for b in s["bins"]) == len(y)
    doc = {"task": {"kind": "binary"}, "best": [{"encoder": "synth", "probe": "logreg", "layer": 1}]}
    out = annotate_calibration(doc, [oof])
    assert out["best"][0]["calibration"]["ece"] == s["ece"] and "calibration" not in doc["best"][0]
    Y = np.stack([y, 1 - y], 1)
    oof_ml = oof_predictions(X3, Y, spk, "multilabel", make_probe("logreg"), classes=("a", "b"))
    assert set(calibration_summary(oof_ml, 1)["per_label"]) == {"a", "b"}
    with pytest.raises(CalibrationError):
        calibration_summary(oof_predictions(X3, y, spk, "multiclass", make_probe("logreg")), 1)


def test_thresholds_alone_equal_those_of_the_inner_scores():
    from probekit.probe.thresholds import inner_scores, thresholds_from_scores

    X, y, spk = _speaker_data(d=6)
    probe = make_probe("logreg")
    cal, thr = fit_inner(probe, X, y, spk, "binary", tune=True, seed=2)
    assert cal is None
    assert np.array_equal(thr, thresholds_from_scores(y, inner_scores(probe, X, y, spk, "binary", seed=2)))
