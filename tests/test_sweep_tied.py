"""A sweep's out-of-fold files, tied layers, calibration and intervals come from probe's own core.

Known answers: two layers with the same signal are tied, a noise layer is not; with one candidate,
a sweep's out-of-fold file is probe's, and so are its tied sets.
"""

from __future__ import annotations

import numpy as np
import pytest

from probekit.cache import write_cache
from probekit.oof import load_oof
from probekit.probe.probing import ProbeConfig, run_probe
from probekit.probe.sweep import SweepSpec, run_sweep, sweep_document, write_outputs
from probekit.probe.tasks import TaskSpec
from probekit.results import load_results, validate_results


def _twin_cache(path, n=240, dim=8, speakers=12, seed=0):
    """Layers 0 and 2 hold the same features, which predict the ``tag`` column; layer 1 is noise."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    signal = rng.normal(size=(n, dim)).astype(np.float32)
    signal[:, :2] += 1.2 * np.where(y, 1.0, -1.0)[:, None]
    emb = np.stack([signal, rng.normal(size=(n, dim)).astype(np.float32), signal], axis=1)
    meta = {"speaker": [f"s{i % speakers:02d}" for i in range(n)], "tag": ["yes" if v else "no" for v in y]}
    write_cache(path, [f"id{i:05d}" for i in range(n)], emb, meta, attrs={"encoder": "twins"})
    return path


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    return _twin_cache(tmp_path_factory.mktemp("twins") / "twins.h5")


def _spec(**kw):
    base = dict(task="binary", target="tag", positive="yes", probe="logreg", grid=(("C", (0.01, 1.0)),), outer_folds=3, inner_folds=2)
    return SweepSpec(**{**base, **kw})


def test_twin_signal_layers_are_tied_and_the_noise_layer_is_not(twins, tmp_path):
    res = run_sweep([twins], _spec(), tmp_path)
    paths = write_outputs(res, tmp_path)
    doc = load_results(paths["results.json"])
    (best,) = doc["best"]
    assert best["layer"] in (0, 2)
    assert best["tied"] == [0, 2]
    assert best["comparison"]["n_boot"] == 1000 and best["comparison"]["correction"] == "holm"
    rows = {r["layer"]: r for r in doc["rows"]}
    assert rows[0]["tied_with_best"] and rows[2]["tied_with_best"] and not rows[1]["tied_with_best"]
    assert rows[1]["p_vs_best"] < 0.05 and rows[0]["p_vs_best"] == rows[2]["p_vs_best"] == 1.0
    # Calibration of the best layer, from the same out-of-fold file.
    cal = best["calibration"]
    assert cal["layer"] == best["layer"] and 0 <= cal["ece"] <= 1
    # The intervals and pooled ranking metrics that a store of per-cell scores could not give.
    for r in doc["rows"]:
        for name in ("f1", "accuracy", "roc_auc", "pr_auc"):
            s = r["metrics"][name]
            assert s["value"] is not None and s["ci_low"] is not None and s["ci_high"] is not None, (r["layer"], name)
            assert s["ci_low"] <= s["ci_high"]
    assert rows[0]["metrics"]["roc_auc"]["ci_low"] > rows[1]["metrics"]["roc_auc"]["ci_high"]
    assert doc["seeds"]["bootstrap_seed"] == 0
    oof = load_oof(paths["oof/twins__logreg.npz"])
    assert oof.layers.tolist() == [0, 1, 2] and oof.tested.all()
    np.testing.assert_array_equal(oof.proba[0], oof.proba[2])  # same features, same fits


def test_resumed_sweep_refits_the_same_predictions(twins, tmp_path):
    """A resumed sweep computes no cell, and its refit from the stored choices gives the same rows."""
    res = run_sweep([twins], _spec(grid=(("C", (0.001, 0.1, 10.0)),)), tmp_path)
    again = run_sweep([twins], _spec(grid=(("C", (0.001, 0.1, 10.0)),)), tmp_path)
    assert again.computed == 0
    assert [r["fold_params"] for r in res.rows] == [r["fold_params"] for r in again.rows]
    for a, b in zip(res.rows, again.rows):
        assert a["metrics"] == b["metrics"]


@pytest.mark.parametrize("probe", ["logreg", "logreg-fast"])
def test_one_candidate_sweep_gives_probes_oof_and_tied_sets(twins, tmp_path, probe):
    """With one candidate every outer fold fits the same probe on the same folds as ``probe`` does, so
    the out-of-fold probabilities agree to solver tolerance, the decisions and tied sets exactly."""
    res = run_sweep([twins], _spec(probe=probe, grid=(("C", (0.5,)),)), tmp_path / "sweep")
    write_outputs(res, tmp_path / "sweep")
    cfg = ProbeConfig(caches=(str(twins),), task=TaskSpec("binary", "tag", "yes"), probes=(probe,), params=(("C", 0.5),),
                      folds=3, seed=0, out=str(tmp_path / "probe"))
    pr = run_probe(cfg)
    a = load_oof(tmp_path / "sweep" / "oof" / f"twins__{probe}.npz")
    b = load_oof(tmp_path / "probe" / "oof" / f"twins__{probe}.npz")
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.fold, b.fold)
    np.testing.assert_array_equal(a.layers, b.layers)
    np.testing.assert_allclose(a.proba, b.proba, atol=1e-5)
    np.testing.assert_array_equal(a.pred, b.pred)
    doc = sweep_document(res)
    validate_results(doc)
    assert [bb["tied"] for bb in doc["best"]] == [bb["tied"] for bb in pr.document["best"]]
    assert [r["tied_with_best"] for r in doc["rows"]] == [r["tied_with_best"] for r in pr.document["rows"]]
    for r, q in zip(doc["rows"], pr.document["rows"]):
        for name, s in r["metrics"].items():  # pooled value and interval: probe's, from the same predictions
            for k in ("value", "ci_low", "ci_high"):
                assert s[k] == pytest.approx(q["metrics"][name][k], abs=1e-9, nan_ok=True), (r["layer"], name, k)


def test_bootstrap_zero_draws_no_intervals_and_no_tied_sets(twins, tmp_path):
    doc = sweep_document(run_sweep([twins], _spec(bootstrap=0), tmp_path))
    validate_results(doc)
    assert doc["seeds"]["bootstrap_seed"] is None
    assert all("tied" not in b for b in doc["best"]) and all("tied_with_best" not in r for r in doc["rows"])
    assert all(np.isnan(r["metrics"]["f1"]["ci_low"]) for r in doc["rows"])
    assert all(r["metrics"]["roc_auc"]["value"] > 0 for r in doc["rows"])
