"""Tied layers: paired speaker-bootstrap tests against the best layer, Holm-corrected."""

from __future__ import annotations

import numpy as np
import pytest

from probekit.probe.compare import CompareError, annotate_results, bootstrap_p, compare_encoders, holm, tied_layers
from probekit.probe.probes import make_probe
from tests._oof import oof_predictions


def _data(signal_layers, strength, n_layers=5, n_speakers=12, per_speaker=20, dim=6, seed=0, same=True):
    """3 classes; each layer in ``signal_layers`` carries the class with its ``strength``; identical
    copies when ``same`` (the same vectors in every signal layer)."""
    rng = np.random.default_rng(seed)
    n = n_speakers * per_speaker
    y = np.arange(n) % 3
    X = rng.normal(size=(n, n_layers, dim))
    for layer, s in zip(signal_layers, strength):
        X[:, layer, :3] += s * np.eye(3)[y]
    if same:
        for layer in signal_layers[1:]:
            X[:, layer] = X[:, signal_layers[0]]
    speakers = np.repeat([f"s{i}" for i in range(n_speakers)], per_speaker)
    return X, y, speakers


def test_holm_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 -> x4, x3, x2, x1 -> 0.04, 0.09, 0.08->0.09, 0.5
    assert np.allclose(holm(p), [0.04, 0.09, 0.09, 0.5])
    assert holm([]).shape == (0,)


def test_bootstrap_p_is_two_sided_and_never_zero():
    assert bootstrap_p(np.ones(999)) == pytest.approx(1 / 1000)
    assert bootstrap_p(np.r_[np.ones(500), -np.ones(500)]) == 1.0
    assert bootstrap_p(np.zeros(100)) == 1.0
    assert np.isnan(bootstrap_p(np.array([np.nan])))


def test_two_identical_signal_layers_are_both_tied_and_noise_layers_are_not():
    X, y, spk = _data([1, 3], [2.5, 2.5])
    oof = oof_predictions(X, y, spk, "multiclass", make_probe("logreg"))
    s = tied_layers(oof, "uar", n_boot=500)
    assert s["best_layer"] in (1, 3)
    assert s["tied"] == [1, 3]
    other = 4 - s["best_layer"]
    assert s["per_layer"][other]["diff"] == 0.0 and s["per_layer"][other]["p"] == 1.0
    for noise in (0, 2, 4):
        assert not s["per_layer"][noise]["tied"]
        assert s["per_layer"][noise]["p_adjusted"] < 0.05
    assert s["correction"] == "holm" and s["method"] == "paired speaker bootstrap"


def test_a_clearly_better_layer_stands_alone():
    X, y, spk = _data([1, 2], [3.0, 1.0], same=False)
    oof = oof_predictions(X, y, spk, "multiclass", make_probe("logreg"))
    s = tied_layers(oof, "uar", n_boot=500)
    assert s["best_layer"] == 1
    assert s["tied"] == [1]
    assert s["per_layer"][2]["diff"] > 0.1 and s["per_layer"][2]["diff_ci"][0] > 0


def test_binary_lower_is_better_and_a_given_best_layer():
    X, y, spk = _data([2], [3.0])
    yb = (y == 0).astype(int)
    oof = oof_predictions(X, yb, spk, "binary", make_probe("logreg"))
    s = tied_layers(oof, "f1", n_boot=300)
    assert s["tied"] == [2]
    s0 = tied_layers(oof, "f1", best_layer=0, n_boot=300)
    assert s0["best_layer"] == 0 and s0["per_layer"][2]["diff"] < 0  # the forced "best" is worse than layer 2
    with pytest.raises(CompareError):
        tied_layers(oof, "uar")
    with pytest.raises(CompareError):
        tied_layers(oof, "f1", best_layer=9)


def test_multilabel_hamming_loss_counts_lower_as_better():
    X, y, spk = _data([1], [3.0])
    Y = np.stack([y == 0, y != 1], 1).astype(int)
    oof = oof_predictions(X, Y, spk, "multilabel", make_probe("logreg"), classes=("a", "b"))
    s = tied_layers(oof, "hamming_loss", n_boot=300)
    assert s["best_layer"] == 1 and s["tied"] == [1]
    assert all(s["per_layer"][k]["diff"] > 0 for k in (0, 2, 3, 4))


def test_encoders_compared_on_common_rows_and_the_results_document_annotated():
    X, y, spk = _data([1], [3.0])
    strong = oof_predictions(X, y, spk, "multiclass", make_probe("logreg"), encoder="strong")
    Xw, _, _ = _data([1], [0.7], seed=0)
    weak = oof_predictions(Xw, y, spk, "multiclass", make_probe("logreg"), encoder="weak")
    c = compare_encoders([(weak, 1), (strong, 1)], "uar", n_boot=300)
    assert c["best"] == 1 and c["entries"][1]["tied"] and not c["entries"][0]["tied"]
    assert c["n_rows"] == len(y) and c["n_speakers"] == 12

    def row(enc, layer, v):
        return {"encoder": enc, "layer": layer, "probe": "logreg", "n_folds": 5, "metrics": {"uar": {"value": v}}}

    doc = {
        "headline": {"metric": "uar", "aggregate": "pooled"},
        "config": {"bootstrap": 200},
        "seeds": {"bootstrap_seed": 0},
        "rows": [row(e, k, 0.5) for e in ("strong", "weak") for k in range(5)],
        "best": [{"encoder": e, "probe": "logreg", "layer": 1, "metric": "uar", "value": 0.9} for e in ("strong", "weak")],
    }
    out = annotate_results(doc, [strong, weak])
    assert "tied" not in doc["best"][0]  # a copy, the input untouched
    assert out["best"][0]["tied"] == [1] and out["best"][0]["comparison"]["correction"] == "holm"
    r1 = next(r for r in out["rows"] if r["encoder"] == "strong" and r["layer"] == 1)
    r0 = next(r for r in out["rows"] if r["encoder"] == "strong" and r["layer"] == 0)
    assert r1["tied_with_best"] and r1["p_vs_best"] == 1.0 and not r0["tied_with_best"]
    assert [e["encoder"] for e in out["encoder_comparison"][0]["entries"]] == ["strong", "weak"]


def test_files_that_disagree_on_labels_are_refused():
    X, y, spk = _data([1], [3.0])
    a = oof_predictions(X, y, spk, "multiclass", make_probe("logreg"), encoder="a")
    b = oof_predictions(X, (y + 1) % 3, spk, "multiclass", make_probe("logreg"), encoder="b")
    with pytest.raises(CompareError, match="different labels"):
        compare_encoders([(a, 1), (b, 1)], "uar")
