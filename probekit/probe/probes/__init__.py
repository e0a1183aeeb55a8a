"""Probe registry: ``make_probe(name, **params)`` builds an unfitted scikit-learn estimator."""

from __future__ import annotations

import inspect

from probekit.probe.probes.lgbm import LGBMProbe
from probekit.probe.probes.logreg import LogRegProbe
from probekit.probe.probes.mlp import MLPProbe
from probekit.probe.tasks import ProbeInputError

PROBES = {"logreg": LogRegProbe, "mlp": MLPProbe, "lgbm": LGBMProbe}


def probe_params(name: str) -> dict[str, object]:
    """Parameter names of probe ``name`` and their defaults."""
    sig = inspect.signature(PROBES[name].__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self"}


def make_probe(name: str, **params):
    """An unfitted probe ``name`` (``logreg`` | ``mlp`` | ``lgbm``) with ``params``; clear error for unknown ones."""
    if name not in PROBES:
        raise ProbeInputError(f"unknown probe '{name}': use one of {', '.join(PROBES)}")
    allowed = probe_params(name)
    bad = [k for k in params if k not in allowed]
    if bad:
        raise ProbeInputError(f"probe '{name}' has no parameter(s) {', '.join(bad)}; it takes {', '.join(allowed)}")
    return PROBES[name](**params)


__all__ = ["PROBES", "make_probe", "probe_params", "LogRegProbe", "MLPProbe", "LGBMProbe"]
