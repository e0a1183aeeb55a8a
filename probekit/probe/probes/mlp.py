"""One-hidden-layer MLP probe, and the network parameters it shares with the fast path."""

from __future__ import annotations

from sklearn.neural_network import MLPClassifier

from probekit.probe.probes._base import ScaledProbe


class MLPParams:
    """The network parameters of :class:`MLPProbe`, stored by one constructor for it and for the fast path
    (:class:`probekit.probe.probes.fast_mlp.FastMLPProbe` passes them on unchanged)."""

    def __init__(
        self,
        hidden: int = 256,
        alpha: float = 1e-2,
        solver: str = "lbfgs",
        max_iter: int = 300,
        learning_rate: float = 1e-3,
        class_weight: str | None = None,
        seed: int = 0,
    ):
        self.hidden = hidden
        self.alpha = alpha
        self.solver = solver
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.class_weight = class_weight
        self.seed = seed


class MLPProbe(MLPParams, ScaledProbe):
    """MLP with one ReLU hidden layer of ``hidden`` units on standardised features.

    ``alpha``: L2 penalty; ``solver``: ``"lbfgs"`` (full-batch, deterministic and fast on the few
    hundred to few thousand rows a probe sees) or ``"adam"``; ``max_iter``: solver iterations;
    ``class_weight="balanced"`` becomes sample weights.
    """

    _native_class_weight = False
    # One network with a sigmoid output per label: the labels share the hidden layer, and it costs
    # one fit instead of k (one-vs-rest MLPs were the slowest part of a multi-label run).
    _native_multilabel = True

    def _classifier(self):
        return MLPClassifier(
            hidden_layer_sizes=(int(self.hidden),),
            alpha=self.alpha,
            solver=self.solver,
            max_iter=int(self.max_iter),
            learning_rate_init=self.learning_rate,
            random_state=self.seed,
        )
