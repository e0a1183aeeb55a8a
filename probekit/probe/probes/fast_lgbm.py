"""The fast LightGBM probe: raw columns beside per-fold PCA axes, a few features per tree, fewer bins,
early stopping, one binned dataset for every label."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from probekit.probe.probes._base import local_classes
from probekit.probe.probes._fast import FastProbe, Projection, fit_projection, inner_split, sample_weight
from probekit.probe.probes.lgbm import LGBMProbe, LGBMTreeParams
from probekit.probe.tasks import ProbeInputError


class FastLGBMProbe(LGBMTreeParams, FastProbe):
    """LightGBM with cheap trees: each sees about ``tree_features`` features, ``max_bin`` histogram bins,
    early stopping, and one binned dataset per training part for every label.

    Per training part (a fold's, or ``fit``'s input): the features are ``raw_features`` of the input
    columns (``None``: all; an int: that many, drawn with ``seed``, the same for every part) followed by
    ``pca_dims`` whitened principal axes fitted on that part only (0: none). Bin edges come from at most
    ``bin_rows`` of the part's rows. Each tree builds its histograms on a share
    ``min(colsample_bytree, tree_features / features)`` of them, so a tree's cost does not grow with the
    layer's width. About ``val_fraction`` of the part (whole speakers when ``groups`` is given) is held
    out for early stopping with ``patience`` rounds; LightGBM's binned dataset is built once and every
    label of a multi-label target trains on it (one-vs-rest; a label constant in the part predicts its
    rate). Tree parameters mean what they mean in :class:`LGBMProbe`; the round budget is
    ``n_estimators`` for every ``budget_rows`` fitting rows begun: more rows make more rounds worth
    having, and early stopping still picks the rounds within it. Parts of fewer than ``fast_min_rows``
    rows use :class:`LGBMProbe` itself.
    """

    _exact = LGBMProbe
    _exact_solver = "lightgbm"

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
        raw_features: int | None = 448,
        pca_dims: int = 64,
        tree_features: int = 64,
        max_bin: int = 31,
        bin_rows: int = 2048,
        patience: int = 10,
        val_fraction: float = 0.1,
        fast_min_rows: int = 2000,
        budget_rows: int = 32768,
    ):
        super().__init__(n_estimators, learning_rate, num_leaves, min_child_samples, colsample_bytree, class_weight, n_jobs, seed)
        self.raw_features = raw_features
        self.pca_dims = pca_dims
        self.tree_features = tree_features
        self.max_bin = max_bin
        self.bin_rows = bin_rows
        self.patience = patience
        self.val_fraction = val_fraction
        self.fast_min_rows = fast_min_rows
        self.budget_rows = budget_rows

    def _round_budget(self, n_fit: int) -> int:
        """Rounds allowed for ``n_fit`` fitting rows: ``n_estimators`` per ``budget_rows`` begun (at least one)."""
        return int(self.n_estimators) * max(1, -(-int(n_fit) // max(1, int(self.budget_rows))))

    def _params(self, objective: str, n_out: int, n_features: int) -> dict:
        """LightGBM's native parameters for what :class:`LGBMProbe` asks of ``LGBMClassifier``, with the fast path's shortcuts."""
        params = {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": int(self.num_leaves),
            "min_data_in_leaf": int(self.min_child_samples),
            "feature_fraction": self._tree_share(n_features),
            "max_bin": int(self.max_bin),
            "bin_construct_sample_cnt": int(self.bin_rows),
            "num_threads": int(self.n_jobs),
            "seed": int(self.seed),
            "deterministic": True,
            "force_col_wise": True,
            "verbose": -1,
        }
        if objective == "multiclass":
            params["num_class"] = n_out
        return params

    def _tree_share(self, n_features: int) -> float:
        return float(min(self.colsample_bytree, max(1, int(self.tree_features)) / n_features))

    def _fit_fast(self, X, y, trains, groups):
        return [self._fit_one(X[tr], y[tr], None if groups is None else groups[tr]) for tr in trains]

    def _fit_one(self, X, y, groups):
        import lightgbm as lgb

        X = np.asarray(X, dtype=np.float32)  # one float32 copy of the part serves the PCA and the features
        features = fit_features(X, self.raw_features, self.pca_dims, self.seed)
        Z = features.transform(X)
        fit, val, how = inner_split(len(y), groups, self.val_fraction, self.seed)
        weights = sample_weight(y, self.class_weight) if y.ndim == 1 else None
        if y.ndim == 1:
            present, local = local_classes(y)
            columns = [local]
            objective = "binary" if len(present) == 2 else "multiclass"
        else:
            columns = [y[:, j] for j in range(y.shape[1])]
            objective = "binary"
        params = self._params(objective, len(columns) if y.ndim == 2 else int(local.max()) + 1, Z.shape[1])
        # One binned dataset (and validation set binned on its bins) serves every label of the part.
        train_set = lgb.Dataset(Z[fit], label=columns[0][fit], params=params, free_raw_data=True).construct()
        val_set = None
        if len(val):
            with warnings.catch_warnings():
                # The validation set takes the training set's bins; LightGBM warns that it was also given params.
                warnings.filterwarnings("ignore", message="Overriding the parameters from Reference Dataset")
                val_set = lgb.Dataset(Z[val], label=columns[0][val], params=params, reference=train_set).construct()
        del Z
        boosters, rounds = [], []
        budget = self._round_budget(len(fit))
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
            booster = lgb.train(params, train_set, num_boost_round=budget,
                                valid_sets=[val_set] if val_set is not None else None, callbacks=callbacks)
            boosters.append(booster)
            rounds.append(int(booster.best_iteration or booster.current_iteration()))
        report = {
            "solver": "lightgbm fast path",
            "raw_features": features.n_raw,
            "pca_dims": features.pca_dims,
            "pca_explained_variance": None if features.proj is None else round(features.proj.explained, 4),
            "tree_feature_share": round(params["feature_fraction"], 4),
            "max_bin": int(self.max_bin),
            "bin_rows": int(min(self.bin_rows, len(fit))),
            "rounds": rounds,
            "round_budget": budget,
            "early_stopping": f"patience {self.patience} on {how}" if len(val) else how,
            "gave_up": "features per tree, bin resolution, and the held-out rows (not refitted)"
            + ("; raw columns not drawn" if features.n_raw < np.shape(X)[1] else "")
            + ("; the rest of the PCA's variance" if features.proj is not None and features.n_raw == 0 else ""),
        }
        return FittedTrees(features, boosters, objective, y.ndim == 2), report


@dataclass(frozen=True)
class PartFeatures:
    """What the trees of one training part see: ``columns`` of the input, then ``proj``'s axes.

    ``transform(X)``: ``(n, d)`` -> ``(n, len(columns) + pca_dims)`` float32. The raw columns are not
    standardised: LightGBM's quantile bins are the same for any increasing map of a column.
    """

    columns: np.ndarray  # (k,) int64 input columns kept, ascending
    proj: Projection | None

    @property
    def n_raw(self) -> int:
        return len(self.columns)

    @property
    def pca_dims(self) -> int:
        return 0 if self.proj is None else self.proj.dims

    def transform(self, X) -> np.ndarray:
        X = np.asarray(X)
        parts = []
        if len(self.columns):
            raw = X if len(self.columns) == X.shape[1] else X[:, self.columns]
            parts.append(np.asarray(raw, dtype=np.float32))
        if self.proj is not None:
            parts.append(self.proj.transform(X))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def fit_features(X, raw_features: int | None, pca_dims: int, seed: int) -> PartFeatures:
    """The features of a training part ``X`` ``(n, d)``: ``raw_features`` columns (``None``: all d; the
    drawn subset depends on ``d`` and ``seed`` only) and a PCA of ``X`` to ``pca_dims`` axes (0: none)."""
    d = np.shape(X)[1]
    k = d if raw_features is None else int(np.clip(raw_features, 0, d))
    if k == 0 and pca_dims <= 0:
        raise ProbeInputError("probe 'lgbm' has no features to split on: set --param lgbm.raw_features (None: all columns) or lgbm.pca_dims above 0")
    columns = np.arange(d) if k == d else np.sort(np.random.default_rng(seed).choice(d, size=k, replace=False))
    proj = fit_projection(X, int(pca_dims)) if pca_dims > 0 else None
    return PartFeatures(columns.astype(np.int64), proj)


@dataclass(frozen=True)
class FittedTrees:
    """A fitted part: the part's features, then one booster per label (a float: a constant rate), or
    one binary / multi-class booster; each predicts at its early-stopping round."""

    features: PartFeatures
    boosters: list
    objective: str
    multilabel: bool

    def predict_proba(self, X) -> np.ndarray:
        Z = self.features.transform(X)
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


__all__ = ["FastLGBMProbe", "FittedTrees", "PartFeatures", "Projection", "fit_features"]
