import numpy as np
import pytest
from sklearn.base import clone

from probekit.probe.probes import PROBES, make_probe
from probekit.probe.tasks import ProbeInputError

FAST = {"logreg": {}, "mlp": {"hidden": 16, "max_iter": 100}, "lgbm": {"n_estimators": 20}, "logreg-fast": {}}


def _xy(kind, n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)) * 10 + 50  # far from standardised: the probe must scale
    c = np.arange(n) % 3
    X[:, 0] += 40 * c
    if kind == "binary":
        return X, (c == 0).astype(int)
    if kind == "multiclass":
        return X, c
    return X, np.stack([(c == 0), (c > 0), (c == 2)], 1).astype(int)


@pytest.mark.parametrize("name", [n for n in PROBES if getattr(PROBES[n], "input_layers", None) != "all"])  # all-layer probes: test_layerweights.py
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_probe_learns_and_shapes(name, kind):
    X, y = _xy(kind)
    est = make_probe(name, **FAST.get(name, {}))
    fitted = clone(est).fit(X[:60], y[:60])
    proba = fitted.predict_proba(X[60:])
    pred = fitted.predict(X[60:])
    if kind == "multilabel":
        assert proba.shape == (30, 3)
        assert pred.shape == (30, 3)
    else:
        assert proba.shape == (30, len(np.unique(y)))
        assert np.allclose(proba.sum(1), 1)
    # >= rather than >: one-vs-rest (logreg-fast) cannot cut the middle class out with one linear threshold.
    assert (pred == y[60:]).mean() >= 0.9
    assert not hasattr(est, "classes_")  # the unfitted original is untouched


def test_constructor_stores_params_only_and_clone_roundtrips():
    est = make_probe("logreg", C=0.1, class_weight="balanced")
    assert est.get_params()["C"] == 0.1
    assert clone(est).get_params() == est.get_params()


def test_standardisation_uses_training_rows_only():
    X, y = _xy("binary")
    est = make_probe("logreg", exact=True).fit(X[:60], y[:60])
    scaler = est.estimator_[0]
    assert np.allclose(scaler.mean_, X[:60].mean(0))


def test_single_class_training_is_refused():
    with pytest.raises(ValueError, match="single class"):
        make_probe("logreg").fit(np.zeros((4, 2)), np.zeros(4, dtype=int))


def test_multilabel_constant_label_predicts_its_rate():
    X, y = _xy("multilabel")
    y[:, 2] = 0
    est = make_probe("logreg").fit(X, y)
    assert np.all(est.predict_proba(X)[:, 2] == 0)


def test_balanced_class_weight_raises_minority_recall():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + 0.8 * rng.normal(size=300) > 1.6).astype(int)
    for name in ("logreg", "mlp"):
        plain = make_probe(name, **FAST[name]).fit(X, y).predict(X)
        bal = make_probe(name, class_weight="balanced", **FAST[name]).fit(X, y).predict(X)
        assert bal[y == 1].mean() > plain[y == 1].mean(), name


def test_lgbm_is_deterministic():
    X, y = _xy("multiclass")
    a = make_probe("lgbm", n_estimators=20, seed=3).fit(X, y).predict_proba(X)
    b = make_probe("lgbm", n_estimators=20, seed=3).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)


def test_unknown_probe_and_param():
    with pytest.raises(ProbeInputError, match="unknown probe 'svm'"):
        make_probe("svm")
    with pytest.raises(ProbeInputError, match="no parameter"):
        make_probe("logreg", hidden=3)
