"""Probe registry: ``make_probe(name, **params)`` builds an unfitted scikit-learn estimator."""

from __future__ import annotations

import inspect

from probekit.probe.fastlogreg import FastLogReg
from probekit.probe.probes.layerweights import LayerWeightsProbe
from probekit.probe.probes.lgbm import LGBMProbe
from probekit.probe.probes.logreg import LogRegProbe
from probekit.probe.probes.mlp import MLPProbe
from probekit.probe.tasks import ProbeInputError

# name -> estimator class. "logreg-fast" is the batched float32 solver the sweep uses for every cell.
PROBES = {"logreg": LogRegProbe, "mlp": MLPProbe, "lgbm": LGBMProbe, "logreg-fast": FastLogReg, "layer-weights": LayerWeightsProbe}
# The reference scikit-learn estimators, for --exact (the same classes until fast paths replace a default).
EXACT_PROBES = {"logreg": LogRegProbe, "mlp": MLPProbe, "lgbm": LGBMProbe, "logreg-fast": FastLogReg, "layer-weights": LayerWeightsProbe}


def _table(exact: bool) -> dict:
    return EXACT_PROBES if exact else PROBES


def probe_params(name: str, exact: bool = False) -> dict[str, object]:
    """Parameter names of probe ``name`` and their defaults."""
    sig = inspect.signature(_table(exact)[name].__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self"}


def make_probe(name: str, exact: bool = False, **params):
    """An unfitted probe ``name`` with ``params``; ``exact`` picks the reference estimator. Clear error for unknown ones."""
    table = _table(exact)
    if name not in table:
        raise ProbeInputError(f"unknown probe '{name}': use one of {', '.join(table)}")
    allowed = probe_params(name, exact)
    bad = [k for k in params if k not in allowed]
    if bad:
        raise ProbeInputError(f"probe '{name}' has no parameter(s) {', '.join(bad)}; it takes {', '.join(allowed)}")
    return table[name](**params)


__all__ = ["PROBES", "EXACT_PROBES", "make_probe", "probe_params", "LogRegProbe", "MLPProbe", "LGBMProbe", "FastLogReg", "LayerWeightsProbe"]
