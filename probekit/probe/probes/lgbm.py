"""Gradient-boosted trees probe (LightGBM's scikit-learn API), and the tree parameters it shares with the fast path."""

from __future__ import annotations

from probekit.probe.probes._base import ScaledProbe


class LGBMTreeParams:
    """The tree parameters of :class:`LGBMProbe`, stored by one constructor for it and for the fast path
    (:class:`probekit.probe.probes.fast_lgbm.FastLGBMProbe` passes them on unchanged)."""

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
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.colsample_bytree = colsample_bytree
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.seed = seed


class LGBMProbe(LGBMTreeParams, ScaledProbe):
    """LightGBM classifier, deterministic for a given ``seed``; ``n_jobs`` threads per fit.

    Standardisation is harmless for trees and keeps every probe's pipeline identical.
    """

    def _classifier(self):
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=int(self.n_estimators),
            learning_rate=self.learning_rate,
            num_leaves=int(self.num_leaves),
            min_child_samples=int(self.min_child_samples),
            colsample_bytree=self.colsample_bytree,
            class_weight=self.class_weight,
            n_jobs=int(self.n_jobs),
            random_state=self.seed,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
