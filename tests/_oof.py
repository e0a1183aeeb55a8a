"""Out-of-fold predictions for tests and examples, built with the library's folds and probes.

Stand-in for the core's own OOF writer where a test needs predictions of known layers without a
whole probe run.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone

from probekit.oof import ALL_LAYERS, OOFPredictions
from probekit.probe.splits import make_folds


def oof_predictions(X, y, speakers, kind, probe, layers=None, n_folds=5, seed=0, encoder="synth", probe_name="logreg", classes=None):
    """``X`` ``(n, L, d)``; fits ``probe`` per layer (or once on all layers when it declares
    ``input_layers = "all"``) under speaker-kfold and returns the :class:`OOFPredictions`."""
    X, y, speakers = np.asarray(X), np.asarray(y), np.asarray(speakers).astype(str)
    n, L = X.shape[:2]
    folds = make_folds("speaker-kfold", speakers, y, n_folds=n_folds, seed=seed)
    all_layers = getattr(probe, "input_layers", None) == "all"
    layers = [ALL_LAYERS] if all_layers else list(range(L) if layers is None else layers)
    if classes is None:
        classes = ("not pos", "pos") if kind == "binary" else tuple(str(c) for c in range(int(y.max()) + 1 if kind == "multiclass" else y.shape[1]))
    c = 1 if kind == "binary" else len(classes)
    proba = np.full((len(layers), n, c), np.nan, dtype=np.float32)
    pred = np.zeros((len(layers), n) + (() if kind != "multilabel" else (y.shape[1],)), dtype=np.int8)
    fold = np.full(n, -1, dtype=np.int16)
    for f, (train, test) in enumerate(folds):
        fold[test] = f
        for i, layer in enumerate(layers):
            Xl = X if layer == ALL_LAYERS else X[:, layer]
            est = clone(probe).fit(Xl[train], y[train])
            p = est.predict_proba(Xl[test])
            if kind == "multiclass":
                full = np.zeros((len(test), c))
                full[:, est.classes_] = p
                proba[i, test] = full
                pred[i, test] = full.argmax(1)
            elif kind == "binary":
                proba[i, test, 0] = p[:, 1]
                pred[i, test] = p[:, 1] >= 0.5
            else:
                proba[i, test] = p
                pred[i, test] = p >= 0.5
    return OOFPredictions(
        encoder=encoder, probe=probe_name, kind=kind, classes=tuple(classes), ids=np.array([f"u{i:04d}" for i in range(n)]),
        speaker=speakers, fold=fold, y_true=y, layers=np.array(layers), proba=proba, pred=pred,
    )
