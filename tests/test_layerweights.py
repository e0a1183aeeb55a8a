"""The layer-weighted probe: softmax weights over every hidden state, then a linear head."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from probekit.oof import ALL_LAYERS
from probekit.probe.probes import PROBES, make_probe
from probekit.probe.probing import ProbeConfig, run_probe
from probekit.probe.tasks import TaskSpec
from tests._synth import synth_cache


def _planted(kind, signal_layer=3, n_layers=6, n=240, dim=8, seed=0):
    """Only ``signal_layer`` separates three classes; every layer has its own scale (as real encoders do)."""
    rng = np.random.default_rng(seed)
    c = np.arange(n) % 3
    X = rng.normal(size=(n, n_layers, dim)) * (1 + np.arange(n_layers))[None, :, None] * 5
    X[:, signal_layer, :3] += 3.0 * 5 * (1 + signal_layer) * np.eye(3)[c]
    if kind == "binary":
        return X, (c == 0).astype(int)
    if kind == "multiclass":
        return X, c
    return X, np.stack([c == 0, c > 0, c == 2], 1).astype(int)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("signal_layer", [1, 4])
def test_most_weight_lands_on_the_planted_layer(kind, signal_layer):
    X, y = _planted(kind, signal_layer)
    est = make_probe("layer-weights").fit(X[:180], y[:180])
    w = est.layer_weights_
    assert w.shape == (6,) and np.isclose(w.sum(), 1)
    assert int(np.argmax(w)) == signal_layer and w[signal_layer] > 0.5
    assert est.report_["layer_weights"] == pytest.approx(w.tolist())
    proba, pred = est.predict_proba(X[180:]), est.predict(X[180:])
    if kind == "multilabel":
        assert proba.shape == pred.shape == (60, 3)
    else:
        assert proba.shape == (60, len(np.unique(y))) and np.allclose(proba.sum(1), 1)
    assert (pred == y[180:]).mean() > 0.8


def test_deterministic_clone_safe_and_declares_all_layers():
    X, y = _planted("multiclass")
    est = make_probe("layer-weights", alpha=1e-2, seed=3)
    assert PROBES["layer-weights"].input_layers == "all"
    a = clone(est).fit(X, y).predict_proba(X)
    b = clone(est).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)
    assert not hasattr(est, "layer_weights_") and clone(est).get_params() == est.get_params()


def test_refuses_single_layer_input_and_single_class():
    with pytest.raises(ValueError, match=r"\(n, layers, dim\)"):
        make_probe("layer-weights").fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="single class"):
        make_probe("layer-weights").fit(np.zeros((4, 2, 3)), np.zeros(4, dtype=int))


def test_balanced_class_weight_raises_minority_recall():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2, 3))
    y = (X[:, 1, 0] + 0.8 * rng.normal(size=300) > 1.6).astype(int)
    plain = make_probe("layer-weights").fit(X, y).predict(X)
    bal = make_probe("layer-weights", class_weight="balanced").fit(X, y).predict(X)
    assert bal[y == 1].mean() > plain[y == 1].mean()


def test_probe_run_reports_one_row_at_layer_minus_one_with_its_weights(tmp_path):
    cache = synth_cache(tmp_path / "c.h5", signal_layer=2, n_layers=4)
    res = run_probe(ProbeConfig(caches=(str(cache),), task=TaskSpec("multiclass", "label"), probes=("logreg", "layer-weights"), folds=4, bootstrap=50))
    rows = [r for r in res.rows if r["probe"] == "layer-weights"]
    assert [r["layer"] for r in rows] == [ALL_LAYERS]
    w, sd = np.array(rows[0]["layer_weights"]), np.array(rows[0]["layer_weights_std"])
    assert w.shape == sd.shape == (4,) and int(np.argmax(w)) == 2
    assert rows[0]["metrics"]["uar"]["value"] > 0.8
