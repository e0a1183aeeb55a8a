"""Logistic-regression probe: the plain default, C=1 on standardised features."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression

from probekit.probe.probes._base import ScaledProbe


class LogRegProbe(ScaledProbe):
    """L2 logistic regression (lbfgs) on standardised features.

    ``C``: inverse regularisation strength; ``class_weight``: ``None`` or ``"balanced"``;
    ``max_iter``: lbfgs iterations (1000 converges on pooled encoder features).
    """

    def __init__(self, C: float = 1.0, class_weight: str | None = None, max_iter: int = 1000, seed: int = 0):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.seed = seed

    def _classifier(self):
        return LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, solver="lbfgs")
