"""The batched solver reaches scikit-learn's solution (same objective), for every fold, C and label."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from probekit.probe.fastlogreg import FastLogReg, decision_batched, fit_batched


def _data(n=600, d=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    # Correlated, offset, badly scaled features: standardisation per fold matters.
    X = (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * rng.uniform(0.1, 10, d) + 3).astype(np.float16)
    logits = X.astype(np.float32) @ rng.normal(size=(d, k)) / (10 * np.sqrt(d))
    Y = (logits + rng.normal(size=(n, k)) > 0.2).astype(np.uint8)
    return X, Y


def test_matches_sklearn_per_fold_C_and_label():
    X, Y = _data()
    n = len(Y)
    masks = np.zeros((n, 2), dtype=bool)
    masks[: n * 3 // 4, 0] = True
    masks[n // 4 :, 1] = True
    Cs = [0.01, 1.0, 10.0]
    gf, gc = np.repeat([0, 1], 3), np.tile(Cs, 2)
    fit = fit_batched(X, Y, masks, gf, gc, tol=1e-6)
    assert fit.converged.all()
    S = decision_batched(X, fit)
    for g, (f, C) in enumerate(zip(gf, gc)):
        tr = masks[:, f]
        sc = StandardScaler().fit(X[tr].astype(np.float64))
        for j in range(Y.shape[1]):
            ref = LogisticRegression(C=C, tol=1e-8, max_iter=5000).fit(sc.transform(X[tr].astype(np.float64)), Y[tr, j])
            want = ref.decision_function(sc.transform(X.astype(np.float64)))
            # Same optimum: scores agree to a small fraction of their spread, and so do the predictions.
            assert np.abs(S[:, g, j] - want).max() < 0.02 * (np.abs(want).max() + 1)
            assert np.mean((S[:, g, j] > 0) == (want > 0)) > 0.99


def test_test_rows_do_not_influence_the_fit():
    X, Y = _data(seed=1)
    n = len(Y)
    mask = np.zeros((n, 1), dtype=bool)
    mask[: n // 2] = True
    a = fit_batched(X, Y, mask, [0], [1.0], tol=1e-6)
    X2, Y2 = X.copy(), Y.copy()
    X2[n // 2 :] = np.float16(1000.0)  # wild values outside the training mask
    Y2[n // 2 :] = 1
    b = fit_batched(X2, Y2, mask, [0], [1.0], tol=1e-6)
    assert a.converged.all() and b.converged.all()
    # Out-of-mask rows only shape the preconditioner (the path), never the optimum.
    np.testing.assert_allclose(a.coef, b.coef, rtol=0, atol=1e-3 * np.abs(a.coef).max())


def test_single_class_training_fold_predicts_that_class():
    X, Y = _data(seed=2)
    Y[:, 1] = 0
    fit = fit_batched(X, Y, np.ones((len(Y), 1), dtype=bool), [0], [1.0])
    assert (decision_batched(X, fit)[:, 0, 1] < 0).all()
    assert np.abs(fit.coef[0, 1]).max() == 0


@pytest.mark.parametrize("mode", ["binary", "multilabel", "multiclass"])
def test_estimator_contract(mode):
    X, Y = _data(k=3, seed=3)
    y = {"binary": Y[:, 0], "multilabel": Y, "multiclass": Y.argmax(1) + 10 * Y[:, 0]}[mode]
    est = FastLogReg(C=0.5)
    assert est.get_params() == {"C": 0.5, "class_weight": None, "tol": 1e-5, "max_iter": 1000, "seed": 0}
    fitted = clone(est).fit(X, y)
    assert not hasattr(est, "coef_")
    pred = fitted.predict(X)
    assert pred.shape == np.shape(y)
    proba = fitted.predict_proba(X)
    assert np.all((proba >= 0) & (proba <= 1))
    acc = np.mean(pred == y)
    assert acc > 0.6
    if mode == "binary":
        ref = LogisticRegression(C=0.5).fit(StandardScaler().fit_transform(X.astype(np.float64)), y)
        assert np.mean(ref.predict(StandardScaler().fit_transform(X.astype(np.float64))) == pred) > 0.99


@pytest.mark.parametrize("n_train", [23, 101, 333])
def test_one_class_column_is_recognised_at_any_training_size(n_train):
    # A float32 sum of n copies of 1/n can fall short of 1; the one-class check must not rely on it.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_train + 10, 6)).astype(np.float32)
    Y = np.ones((n_train + 10, 1), dtype=np.float32)
    mask = np.zeros((n_train + 10, 1), dtype=bool)
    mask[:n_train] = True
    fit = fit_batched(X, Y, mask, [0], [1.0])
    assert fit.n_iter[0, 0] == 0 and fit.converged[0, 0]
    assert np.all(fit.coef == 0) and fit.intercept[0, 0] > 0
