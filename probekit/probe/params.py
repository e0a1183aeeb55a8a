"""The one hyperparameter syntax: ``--param NAME=VALUE`` (repeatable), everywhere.

``probe``, ``export`` and recipes take one value per name; in ``sweep`` a comma-separated list
(``--param C=0.01,0.1,1``) is the grid. ``NAME`` may be ``PROBE.NAME`` to address one probe
(``mlp.hidden=256``); a bare name applies to every selected probe that takes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from probekit.probe.probes import PROBES, probe_params
from probekit.probe.tasks import ProbeInputError

__all__ = ["parse_value", "parse_param", "parse_grid", "resolve_params"]


def parse_value(raw: str) -> object:
    """``"0.1"`` -> 0.1, ``"3"`` -> 3, ``"true"`` -> True, ``"none"`` -> None; anything else stays a string."""
    raw = raw.strip()
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _split(text: str) -> tuple[str, str]:
    name, sep, raw = text.partition("=")
    if not sep or not name.strip() or not raw.strip():
        raise ProbeInputError(f"--param '{text}' must look like NAME=VALUE (e.g. C=0.1 or mlp.hidden=256)")
    return name.strip(), raw


def parse_param(text: str) -> tuple[str, object]:
    """``"C=0.1"`` -> ``("C", 0.1)``."""
    name, raw = _split(text)
    if "," in raw:
        raise ProbeInputError(f"--param '{text}': one value per name here; lists of values are a grid, for `probekit sweep`")
    return name, parse_value(raw)


def parse_grid(items: Sequence[str]) -> tuple[tuple[str, tuple], ...]:
    """``["C=0.01,0.1,1"]`` -> ``(("C", (0.01, 0.1, 1)),)``: the grid a sweep searches (a single value is a
    one-point axis). A name given twice is an error."""
    out: dict[str, tuple] = {}
    for item in items:
        name, raw = _split(item)
        values = tuple(parse_value(v) for v in raw.split(",") if v.strip())
        if not values:
            raise ProbeInputError(f"--param '{item}': no values")
        if name in out:
            raise ProbeInputError(f"--param {name} is given twice; list every value once, e.g. {name}=0.01,0.1,1")
        out[name] = values
    return tuple(out.items())


def resolve_params(
    probes: tuple[str, ...], params: Sequence[tuple[str, object]], seed: int, class_weight: str | None = None, exact: bool = False
) -> dict[str, dict]:
    """Constructor parameters per probe from ``params`` pairs (plus the seed and class weighting for the
    probes that take them); an error names a parameter no selected probe takes."""
    out: dict[str, dict] = {}
    for p in probes:
        if p not in PROBES:
            raise ProbeInputError(f"unknown probe '{p}': use one of {', '.join(PROBES)}")
        allowed = probe_params(p, exact=exact)
        out[p] = {}
        if "seed" in allowed:
            out[p]["seed"] = seed
        if class_weight is not None:
            if "class_weight" not in allowed:
                raise ProbeInputError(f"--class-weight: probe '{p}' does not take class weights")
            out[p]["class_weight"] = class_weight
    for name, value in params:
        target, _, key = name.rpartition(".")
        if target and target not in probes:
            raise ProbeInputError(f"--param {name}: probe '{target}' is not among the selected probes ({', '.join(probes)})")
        names = [target] if target else list(probes)
        hit = [p for p in names if key in probe_params(p, exact=exact)]
        if not hit:
            raise ProbeInputError(f"--param {name}: no selected probe takes '{key}'")
        for p in hit:
            out[p][key] = value
    return out
