"""The fast LightGBM probe: per-fold PCA, fewer bins, early stopping, one binned dataset for every label."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from probekit.probe.probes._fast import FastProbe, Projection, fit_projection, inner_split, local_classes, sample_weight
from probekit.probe.probes.lgbm import LGBMProbe


class FastLGBMProbe(FastProbe):
    """LightGBM on a training part's own PCA, with ``max_bin`` histogram bins and early stopping.

    Per training part (a fold's, or ``fit``'s input): standardise and project onto ``pca_dims``
    principal axes (fitted on that part only), hold out about ``val_fraction`` of it (whole speakers
    when ``groups`` is given) for early stopping with ``patience`` rounds, build LightGBM's binned
    dataset once and train every label of a multi-label target on it (one-vs-rest; a label constant
    in the part predicts its rate). Tree parameters mean what they mean in :class:`LGBMProbe`;
    ``n_estimators`` is the round budget. Parts of fewer than ``fast_min_rows`` rows use
    :class:`LGBMProbe` itself. ``report_`` / ``fold_reports_`` say which path ran, the PCA size and the
    variance it kept, and the rounds early stopping chose per label.
    """

    _exact = LGBMProbe

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 15,
        min_child_samples: int = 10,
        colsample_bytree: float = 0.5,
        class_weight: str | None = None,
        n_jobs: int = 1,
        seed: int = 0,
        pca_dims: int = 64,
        max_bin: int = 63,
        patience: int = 10,
        val_fraction: float = 0.1,
        fast_min_rows: int = 2000,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.colsample_bytree = colsample_bytree
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.seed = seed
        self.pca_dims = pca_dims
        self.max_bin = max_bin
        self.patience = patience
        self.val_fraction = val_fraction
        self.fast_min_rows = fast_min_rows

    def _params(self, objective: str, n_out: int) -> dict:
        """LightGBM's native parameters for what :class:`LGBMProbe` asks of ``LGBMClassifier``."""
        params = {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": int(self.num_leaves),
            "min_data_in_leaf": int(self.min_child_samples),
            "feature_fraction": self.colsample_bytree,
            "max_bin": int(self.max_bin),
            "num_threads": int(self.n_jobs),
            "seed": int(self.seed),
            "deterministic": True,
            "force_col_wise": True,
            "verbose": -1,
        }
        if objective == "multiclass":
            params["num_class"] = n_out
        return params

    def _fit_parts(self, X, y, trains, groups):
        g = None if groups is None else np.asarray(groups)
        return [self._fit_one(X[tr], y[tr], None if g is None else g[tr]) for tr in trains]

    def _fit_one(self, X, y, groups):
        if len(y) < self.fast_min_rows:
            est = self._exact_probe().fit(X, y)
            return est, {"solver": "lightgbm, exact reference (LGBMProbe)", "reason": f"{len(y)} training rows < fast_min_rows={self.fast_min_rows}"}
        import lightgbm as lgb

        X = np.asarray(X, dtype=np.float32)  # one float32 copy of the part serves the PCA and the projection
        proj = fit_projection(X, self.pca_dims)
        Z = proj.transform(X)
        fit, val, how = inner_split(len(y), groups, self.val_fraction, self.seed)
        weights = sample_weight(y, self.class_weight) if y.ndim == 1 else None
        if y.ndim == 1:
            present, local = local_classes(y)
            columns = [local]
            objective = "binary" if len(present) == 2 else "multiclass"
        else:
            columns = [y[:, j] for j in range(y.shape[1])]
            objective = "binary"
        params = self._params(objective, len(columns) if y.ndim == 2 else int(local.max()) + 1)
        # One binned dataset (and validation set binned on its bins) serves every label of the part.
        train_set = lgb.Dataset(Z[fit], label=columns[0][fit], params=params, free_raw_data=True).construct()
        val_set = None
        if len(val):
            with warnings.catch_warnings():
                # The validation set takes the training set's bins; LightGBM warns that it was also given params.
                warnings.filterwarnings("ignore", message="Overriding the parameters from Reference Dataset")
                val_set = lgb.Dataset(Z[val], label=columns[0][val], params=params, reference=train_set).construct()
        boosters, rounds = [], []
        for col in columns:
            if col[fit].min() == col[fit].max() and y.ndim == 2:
                boosters.append(float(col[0]))  # a label constant in this part: predict its rate
                rounds.append(0)
                continue
            train_set.set_label(col[fit])
            w = sample_weight(col, self.class_weight) if y.ndim == 2 else weights
            if w is not None:
                train_set.set_weight(w[fit])
            callbacks = []
            if val_set is not None:
                val_set.set_label(col[val])
                if w is not None:
                    val_set.set_weight(w[val])
                callbacks.append(lgb.early_stopping(int(self.patience), first_metric_only=True, verbose=False))
            booster = lgb.train(params, train_set, num_boost_round=int(self.n_estimators),
                                valid_sets=[val_set] if val_set is not None else None, callbacks=callbacks)
            boosters.append(booster)
            rounds.append(int(booster.best_iteration or booster.current_iteration()))
        report = {
            "solver": "lightgbm fast path",
            "pca_dims": proj.dims,
            "pca_explained_variance": round(proj.explained, 4),
            "max_bin": int(self.max_bin),
            "rounds": rounds,
            "round_budget": int(self.n_estimators),
            "early_stopping": f"patience {self.patience} on {how}" if len(val) else how,
            "gave_up": "features beyond the PCA axes, bin resolution, and the held-out rows (not refitted)",
        }
        return FittedPCATrees(proj, boosters, objective, y.ndim == 2), report


@dataclass(frozen=True)
class FittedPCATrees:
    """A fitted part: the part's projection, then one booster per label (a float: a constant rate), or
    one binary / multi-class booster; each predicts at its early-stopping round."""

    proj: Projection
    boosters: list
    objective: str
    multilabel: bool

    def predict_proba(self, X) -> np.ndarray:
        Z = self.proj.transform(X)
        cols = []
        for b in self.boosters:
            if isinstance(b, float):
                cols.append(np.full(len(Z), b))
                continue
            p = np.asarray(b.predict(Z, num_iteration=b.best_iteration or None), dtype=np.float64)
            if self.objective == "multiclass":
                return p
            cols.append(p)
        if not self.multilabel:
            return np.stack([1 - cols[0], cols[0]], axis=1)
        return np.stack(cols, axis=1)
