"""The fast probes: batched = one fold at a time, planted layers found, no test row seen by PCA or early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from probekit.probe.probes import EXACT_PROBES, PROBES, make_probe, probe_params
from probekit.probe.probes import _fast, fast_lgbm, fast_mlp
from probekit.probe.tasks import ProbeInputError

# Small budgets, and the fast path forced at any size (it switches to the exact probe below 2000 rows).
FAST = {
    "logreg": {},
    "mlp": {"hidden": 32, "max_epochs": 20, "learning_rate": 1e-2, "fast_min_rows": 0, "pca_dims": 8},
    "lgbm": {"n_estimators": 30, "fast_min_rows": 0, "pca_dims": 8},
}
KINDS = ("binary", "multiclass", "multilabel")


def _data(kind, n=480, d=24, speakers=24, seed=0, signal=1.5):
    """float16 rows of ``speakers`` speakers; three latent labels, each mixed into every dim (as
    pooled encoder states carry them), so the leading principal axes hold them."""
    rng = np.random.default_rng(seed)
    has = rng.normal(size=(n, 3)) > 0.3
    mix = np.random.default_rng(100).normal(size=(3, d))
    X = (rng.normal(size=(n, d)) + signal * has @ mix) * 3 + 10  # far from standardised
    groups = np.array([f"s{i % speakers:02d}" for i in range(n)])
    if kind == "binary":
        y = has[:, 0].astype(np.int64)
    elif kind == "multiclass":
        y = np.where(has[:, 0], 0, np.where(has[:, 1], 1, 2)).astype(np.int64)
    else:
        y = has.astype(np.int64)
    return X.astype(np.float16), y, groups


def _speaker_folds(groups, k=4):
    spk = np.unique(groups)
    fold_of = {s: i % k for i, s in enumerate(spk)}
    f = np.array([fold_of[s] for s in groups])
    return [(np.flatnonzero(f != j), np.flatnonzero(f == j)) for j in range(k)]


def _single(est, X, y, groups, tr, te):
    """What one fold gives through ``fit``/``predict_proba``, spread over every class index."""
    fitted = clone(est).fit(X[tr], y[tr], groups=groups[tr])
    p = fitted.predict_proba(X[te])
    if y.ndim == 2:
        return p
    full = np.zeros((len(te), int(y.max()) + 1))
    full[:, fitted.classes_] = p
    return full


@pytest.mark.parametrize("name", ["logreg", "mlp", "lgbm"])
@pytest.mark.parametrize("kind", KINDS)
def test_fold_proba_equals_fit_on_each_fold(name, kind):
    X, y, groups = _data(kind)
    est = make_probe(name, **FAST[name])
    folds = _speaker_folds(groups, k=5)  # unequal folds: parts differ in size, batches and stopping epoch
    batched = est.fold_proba(X, y, folds, groups=groups)
    assert len(batched) == len(folds) == len(est.fold_reports_)
    # The batched solvers share arithmetic between folds (logreg: one L-BFGS over all folds and
    # labels), so equality is to the solver's tolerance; MLP and LightGBM repeat it exactly.
    atol = 2e-3 if name == "logreg" else 1e-6
    for (tr, te), got in zip(folds, batched):
        want = _single(est, X, y, groups, tr, te)
        assert got.shape == want.shape == ((len(te), 3) if kind != "binary" else (len(te), 2))
        np.testing.assert_allclose(got, want, atol=atol, rtol=0)
    assert not hasattr(est, "model_") and not hasattr(est, "coef_")  # fold_proba fits no state of its own


@pytest.mark.parametrize("name", ["logreg", "mlp", "lgbm"])
def test_class_absent_from_a_training_part_gets_probability_zero(name):
    X, y, groups = _data("multiclass", seed=1)
    folds = _speaker_folds(groups)
    tr, te = folds[0]
    y = y.copy()
    y[tr[y[tr] == 1]] = 2  # class 1 exists only in fold 0's test rows
    y[te[:5]] = 1
    got = make_probe(name, **FAST[name]).fold_proba(X, y, [(tr, te)], groups=groups)[0]
    assert got.shape == (len(te), 3)
    assert np.all(got[:, 1] == 0)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("name", ["logreg", "mlp", "lgbm"])
@pytest.mark.parametrize("kind", KINDS)
def test_planted_layer_is_found(name, kind):
    """Three layers of one speaker set; only layer 1 carries the labels: the fast probe's best layer is 1."""
    rng = np.random.default_rng(3)
    _, y, groups = _data(kind, seed=3)
    noise = [rng.normal(size=(len(groups), 24)).astype(np.float16) for _ in range(3)]
    planted, _, _ = _data(kind, seed=3, signal=1.0)
    layers = [noise[0], planted, noise[2]]
    folds = _speaker_folds(groups)
    scores = []
    for X in layers:
        P = make_probe(name, **FAST[name]).fold_proba(X, y, folds, groups=groups)
        pred = np.zeros_like(y)
        for (_tr, te), p in zip(folds, P):
            pred[te] = (p >= 0.5).astype(int) if kind == "multilabel" else p.argmax(1)
        if kind == "binary":
            scores.append(f1_score(y, pred))
        elif kind == "multiclass":
            scores.append(balanced_accuracy_score(y, pred))
        else:
            scores.append(f1_score(y, pred, average="weighted"))
    assert int(np.argmax(scores)) == 1, scores
    assert scores[1] > scores[0] + 0.15 and scores[1] > scores[2] + 0.15, scores


class _Spy:
    """Records the rows every projection is fitted on and the speakers every validation split holds."""

    def __init__(self, monkeypatch):
        self.projected: list[set[int]] = []
        self.validation: list[set[str]] = []
        real_proj, real_split = _fast.fit_projection, _fast.inner_split

        def fit_projection(X, dims):
            self.projected.append(set(np.asarray(X)[:, -1].astype(int).tolist()))  # last feature = row id
            return real_proj(X, dims)

        def inner_split(n, groups, val_fraction, seed):
            fit, val, how = real_split(n, groups, val_fraction, seed)
            self.validation.append(set(np.asarray(groups)[val].tolist()))
            return fit, val, how

        for mod in (fast_mlp, fast_lgbm):
            monkeypatch.setattr(mod, "fit_projection", fit_projection)
            monkeypatch.setattr(mod, "inner_split", inner_split)


@pytest.mark.parametrize("name", ["mlp", "lgbm"])
@pytest.mark.parametrize("kind", ["binary", "multilabel"])
def test_no_test_row_reaches_pca_or_early_stopping(name, kind, monkeypatch):
    X, y, groups = _data(kind)
    X[:, -1] = np.arange(len(y))  # exact in float16 below 2048
    folds = _speaker_folds(groups)
    spy = _Spy(monkeypatch)
    make_probe(name, **FAST[name]).fold_proba(X, y, folds, groups=groups)
    assert len(spy.projected) == len(spy.validation) == len(folds)
    for (tr, te), rows, held in zip(folds, spy.projected, spy.validation):
        assert rows == set(tr.tolist()), "the PCA must be fitted on exactly the training rows"
        assert held and held <= set(groups[tr]), "early stopping holds out training speakers"
        assert not held & set(groups[te]), "early stopping saw a test speaker"


@pytest.mark.parametrize("name", ["logreg", "mlp", "lgbm"])
def test_changing_test_rows_changes_nothing_else(name):
    """Test part = A + B. Wild features and flipped labels on A leave B's probabilities untouched:
    nothing fitted (standardiser, PCA, weights, stopping round) looked at A."""
    X, y, groups = _data("multilabel", seed=5)
    tr, te = _speaker_folds(groups)[0]
    A, B = te[: len(te) // 2], te[len(te) // 2 :]
    est = make_probe(name, **FAST[name])
    before = est.fold_proba(X, y, [(tr, te)], groups=groups)[0][len(A) :]
    X2, y2 = X.copy(), y.copy()
    X2[A] = np.float16(500.0)
    y2[A] = 1 - y2[A]
    after = est.fold_proba(X2, y2, [(tr, te)], groups=groups)[0][len(A) :]
    np.testing.assert_array_equal(before, after)
    assert len(B)


@pytest.mark.parametrize("name", ["mlp", "lgbm"])
def test_small_training_parts_use_the_exact_probe(name):
    X, y, groups = _data("binary")
    tr, te = _speaker_folds(groups)[0]
    fast = make_probe(name, **{**FAST[name], "fast_min_rows": 10_000})
    got = fast.fold_proba(X, y, [(tr, te)], groups=groups)[0]
    shared = {k: v for k, v in fast.get_params().items() if k in probe_params(name, exact=True)}
    want = make_probe(name, exact=True, **shared).fit(X[tr], y[tr]).predict_proba(X[te])
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert "exact" in fast.fold_reports_[0]["solver"]


@pytest.mark.parametrize("name", ["logreg", "mlp", "lgbm"])
def test_reports_say_what_ran_and_are_json(name):
    X, y, groups = _data("multilabel")
    est = make_probe(name, **FAST[name])
    fitted = clone(est).fit(X, y, groups=groups)
    est.fold_proba(X, y, _speaker_folds(groups), groups=groups)
    for rep in [fitted.report_, *est.fold_reports_]:
        assert rep["solver"]
        json.dumps(rep)
    if name != "logreg":
        assert fitted.report_["pca_dims"] == 8 and "speakers" in fitted.report_["early_stopping"]


@pytest.mark.parametrize("name", ["mlp", "lgbm"])
def test_fast_probes_are_deterministic(name):
    X, y, groups = _data("multiclass", seed=7)
    folds = _speaker_folds(groups)
    a = make_probe(name, **FAST[name], seed=3).fold_proba(X, y, folds, groups=groups)
    b = make_probe(name, **FAST[name], seed=3).fold_proba(X, y, folds, groups=groups)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", ["logreg", "mlp", "lgbm"])
def test_balanced_class_weight_raises_minority_recall(name):
    rng = np.random.default_rng(1)
    n = 900
    X = rng.normal(size=(n, 6))
    y = (X[:, 0] + 0.8 * rng.normal(size=n) > 1.6).astype(int)
    groups = np.array([f"s{i % 30}" for i in range(n)])
    folds = _speaker_folds(groups)
    recall = {}
    for cw in (None, "balanced"):
        P = make_probe(name, **FAST[name], class_weight=cw).fold_proba(X.astype(np.float32), y, folds, groups=groups)
        pred = np.zeros(n, int)
        for (_tr, te), p in zip(folds, P):
            pred[te] = p.argmax(1)
        recall[cw] = pred[y == 1].mean()
    assert recall["balanced"] > recall[None] + 0.1, recall


def test_fast_logreg_multiclass_is_multinomial_like_scikit_learn():
    X, y, groups = _data("multiclass", seed=2, signal=0.6)
    tr, te = _speaker_folds(groups)[1]
    got = make_probe("logreg", tol=1e-6).fold_proba(X, y, [(tr, te)])[0]
    sc = StandardScaler().fit(X[tr].astype(np.float64))
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(sc.transform(X[tr]), y[tr])
    np.testing.assert_allclose(got, ref.predict_proba(sc.transform(X[te])), atol=2e-3)


def test_registry_fast_by_default_exact_on_request():
    assert set(EXACT_PROBES) == set(PROBES)
    for name in ("logreg", "mlp", "lgbm"):
        cls = EXACT_PROBES[name]
        assert type(make_probe(name, exact=True)) is cls
        assert type(make_probe(name)) is not cls
        assert hasattr(make_probe(name), "fold_proba")
    assert type(make_probe("logreg-fast")) is type(make_probe("logreg"))
    assert "pca_dims" in probe_params("lgbm") and "pca_dims" not in probe_params("lgbm", exact=True)
    assert type(make_probe("logreg-fast", exact=True)) is type(make_probe("logreg-fast"))
    with pytest.raises(ProbeInputError, match="no parameter"):
        make_probe("lgbm", exact=True, pca_dims=8)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_mlp_exports_as_the_network_it_predicts_with(kind):
    """The fitted MLP reads as scikit-learn's (``coefs_`` on raw features: the PCA folded into the first
    layer), so the export gives the probe's own probabilities."""
    from probekit.deploy.export import head_from_estimator

    X, y, groups = _data(kind)
    est = make_probe("mlp", **FAST["mlp"]).fit(X, y, groups=groups)
    assert est.report_["solver"].startswith("torch")
    n_out = 1 if kind == "binary" else 3
    head = head_from_estimator(est, kind, n_out, X.shape[1])
    got = head.predict_proba(X.astype(np.float32))
    want = est.predict_proba(X)
    if kind == "binary":
        want = want[:, 1].reshape(got.shape)  # the export gives the positive class's probability
    np.testing.assert_allclose(got, want, atol=1e-4)


def _quiet_column_signal(n=3000, d=40, seed=0):
    """8 loud noise columns (sd 10) own the leading principal axes; the label lives in quiet column 30 (sd 1)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, :8] *= 10
    y = (X[:, 30] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    groups = np.array([f"s{i % 60:02d}" for i in range(n)])
    return X.astype(np.float16), y, groups


def test_fast_lgbm_reaches_signal_outside_the_leading_principal_axes():
    """Known answer: the raw columns beside the PCA axes keep a quiet signal that 8 PCA axes alone lose
    (the hard generator's failure of the PCA-only path, in miniature)."""
    X, y, groups = _quiet_column_signal()
    folds = _speaker_folds(groups)
    scores = {}
    for label, extra in (("raw + pca", {}), ("pca only", {"raw_features": 0})):
        P = make_probe("lgbm", n_estimators=60, pca_dims=8, fast_min_rows=0, **extra).fold_proba(X, y, folds, groups=groups)
        pred = np.zeros_like(y)
        for (_tr, te), p in zip(folds, P):
            pred[te] = p.argmax(1)
        scores[label] = f1_score(y, pred)
    assert scores["raw + pca"] > 0.85, scores
    assert scores["pca only"] < 0.7, scores


def test_fast_lgbm_features_and_tree_share():
    """The raw columns drawn depend on the width and seed only (never on rows); each tree's share of the
    features is min(colsample_bytree, tree_features / features); the report says all of it."""
    X, y, groups = _quiet_column_signal(n=600)
    a = fast_lgbm.fit_features(X[:300], 12, 8, seed=4)
    b = fast_lgbm.fit_features(X[300:] * 3, 12, 8, seed=4)
    np.testing.assert_array_equal(a.columns, b.columns)
    assert len(a.columns) == 12 and a.pca_dims == 8 and a.transform(X).shape == (600, 20)
    assert not np.array_equal(a.columns, fast_lgbm.fit_features(X, 12, 8, seed=5).columns)
    assert fast_lgbm.fit_features(X, None, 0, seed=0).transform(X).shape == (600, 40)
    est = make_probe("lgbm", n_estimators=20, fast_min_rows=0, raw_features=12, pca_dims=8, tree_features=5).fit(X, y, groups=groups)
    rep = est.report_
    assert (rep["raw_features"], rep["pca_dims"], rep["tree_feature_share"]) == (12, 8, 0.25)
    assert "raw columns not drawn" in rep["gave_up"]
    assert make_probe("lgbm", tree_features=1000)._tree_share(40) == 0.5  # colsample_bytree caps it
    with pytest.raises(ProbeInputError, match="raw_features"):
        make_probe("lgbm", fast_min_rows=0, raw_features=0, pca_dims=0).fit(X, y)


def test_fast_lgbm_round_budget_grows_with_the_fitting_rows():
    """n_estimators rounds per budget_rows fitting rows begun: the hotline size keeps 100, 80,000 segments get 200
    (where 100 left the 11-label task 0.86 points under the reference); the report states the budget used."""
    probe = make_probe("lgbm")
    assert [probe._round_budget(n) for n in (1, 14_853, 32_768, 32_769, 57_600, 65_537)] == [100, 100, 100, 200, 200, 300]
    X, y, groups = _quiet_column_signal(n=600)
    small = make_probe("lgbm", n_estimators=5, fast_min_rows=0, budget_rows=200, patience=1000).fit(X, y, groups=groups)
    # 600 rows, about 10% held out for early stopping by speaker: 540 fitting rows, 3 blocks of 200 begun.
    assert small.report_["round_budget"] == 15
    assert 5 < small.report_["rounds"][0] <= 15  # the trees used rounds beyond n_estimators


def test_lgbm_fast_and_exact_share_the_tree_parameters():
    """One constructor stores the tree parameters; the fast probe's small-part fallback gets them all."""
    fast = make_probe("lgbm", num_leaves=7, colsample_bytree=0.3, seed=9)
    exact = fast._exact_probe()
    assert exact.get_params() == {**probe_params("lgbm", exact=True), "num_leaves": 7, "colsample_bytree": 0.3, "seed": 9}
    assert set(probe_params("lgbm", exact=True)) < set(probe_params("lgbm"))


def test_a_shared_projection_is_solved_once_and_changes_nothing(monkeypatch):
    # probe runs mlp and lgbm of a layer inside shared_projections(): each fold's PCA is solved once
    # for both, and each probe gives exactly what it gives alone.
    X, y, groups = _data("multilabel", d=200)
    folds = _speaker_folds(groups)
    params = {name: {**FAST[name], "pca_dims": 12 if name == "mlp" else 6} for name in ("mlp", "lgbm")}
    alone = {name: make_probe(name, **params[name]).fold_proba(X, y, folds, groups=groups) for name in params}
    solved = []
    real = _fast._solve_pca
    monkeypatch.setattr(_fast, "_solve_pca", lambda X, axes: solved.append(axes) or real(X, axes))
    with _fast.shared_projections():
        together = {name: make_probe(name, **params[name]).fold_proba(X, y, folds, groups=groups) for name in params}
    assert solved == [_fast.PCA_SOLVED_AXES] * len(folds)
    for name in params:
        for a, b in zip(alone[name], together[name]):
            np.testing.assert_array_equal(a, b)
    solved.clear()
    make_probe("lgbm", **params["lgbm"]).fold_proba(X, y, folds, groups=groups)
    assert len(solved) == len(folds), "outside the block nothing is remembered"
