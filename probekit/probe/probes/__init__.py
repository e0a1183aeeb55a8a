"""Probe registry: ``make_probe(name, **params)`` builds an unfitted scikit-learn estimator.

``PROBES`` holds the defaults: the fast paths (batched solvers, float32, per-fold PCA and early
stopping where the probe needs them; see docs/probe.md for their accuracy bound). ``EXACT_PROBES``
holds today's reference estimators, unchanged: ``make_probe(name, exact=True)``.
"""

from __future__ import annotations

import inspect

from probekit.probe.fastlogreg import FastLogReg
from probekit.probe.probes._fast import shared_projections
from probekit.probe.probes.fast_lgbm import FastLGBMProbe
from probekit.probe.probes.fast_mlp import FastMLPProbe
from probekit.probe.probes.layerweights import LayerWeightsProbe
from probekit.probe.probes.lgbm import LGBMProbe
from probekit.probe.probes.logreg import LogRegProbe
from probekit.probe.probes.mlp import MLPProbe
from probekit.probe.tasks import ProbeInputError

PROBES = {
    "logreg": FastLogReg,
    "mlp": FastMLPProbe,
    "lgbm": FastLGBMProbe,
    "logreg-fast": FastLogReg,
    "layer-weights": LayerWeightsProbe,
}

EXACT_PROBES = {
    "logreg": LogRegProbe,
    "mlp": MLPProbe,
    "lgbm": LGBMProbe,
    "logreg-fast": FastLogReg,  # named for its solver: it has no other form
    "layer-weights": LayerWeightsProbe,  # one implementation: its layer mixing is the point
}


def _registry(name: str, exact: bool) -> type:
    table = EXACT_PROBES if exact else PROBES
    if name not in table:
        raise ProbeInputError(f"unknown probe '{name}': use one of {', '.join(PROBES)}")
    return table[name]


def probe_params(name: str, exact: bool = False) -> dict[str, object]:
    """Parameter names of probe ``name`` (its exact reference with ``exact``) and their defaults."""
    sig = inspect.signature(_registry(name, exact).__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self"}


def accepts(fn, name: str) -> bool:
    """Whether callable ``fn`` takes a parameter ``name``."""
    return name in inspect.signature(fn).parameters


def fit_probe(est, X, y, groups):
    """``est.fit(X, y)``, with the rows' speakers ``groups`` ``(n,)`` for probes that split by speaker inside
    (early stopping on held-out speakers). Every fit of a probe on a training part goes through here, so a
    probe is fitted the same way for a fold, an inner fold and an export."""
    return est.fit(X, y, groups=groups) if accepts(est.fit, "groups") else est.fit(X, y)


def make_probe(name: str, exact: bool = False, **params):
    """An unfitted probe ``name`` (a key of :data:`PROBES`) with ``params``; ``exact``: the reference
    estimator of :data:`EXACT_PROBES` instead of the fast path. Clear errors for unknown names."""
    cls = _registry(name, exact)
    allowed = probe_params(name, exact)
    bad = [k for k in params if k not in allowed]
    if bad:
        raise ProbeInputError(f"probe '{name}' has no parameter(s) {', '.join(bad)}; it takes {', '.join(allowed)}")
    return cls(**params)


__all__ = [
    "PROBES",
    "EXACT_PROBES",
    "make_probe",
    "probe_params",
    "fit_probe",
    "accepts",
    "shared_projections",
    "FastLogReg",
    "FastMLPProbe",
    "FastLGBMProbe",
    "LayerWeightsProbe",
    "LogRegProbe",
    "MLPProbe",
    "LGBMProbe",
]
