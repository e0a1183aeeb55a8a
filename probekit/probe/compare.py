"""Which layers are as good as the best one? Paired speaker-bootstrap tests on out-of-fold predictions.

Every layer of one (encoder, probe) was scored on the same out-of-fold rows, so each resample of
speakers (:func:`probekit.probe.metrics.speaker_resamples`, the confidence intervals' draws) scores the
best and another layer on the same rows. ``d = best - other`` gives the two-sided p-value
``p = min(1, 2 * min(#{d <= 0}, #{d >= 0}) / B)`` (the smallest level at which d's percentile interval
excludes 0), floored at ``1 / (B + 1)``; Holm's step-down method corrects the L-1 comparisons, and a
layer whose adjusted p-value is at least ``level`` is *tied with the best*. Speakers, not rows, are
resampled because rows of one speaker are not independent; docs/probe.md#tied-layers says more.

Entry points return plain dicts, which the results document stores: :func:`tied_layers` (one
(encoder, probe)), :func:`compare_encoders` (several encoders' best layers on their common rows) and
:func:`annotate_results` (both, added to a results document from its out-of-fold files).
"""

from __future__ import annotations

import numpy as np

from probekit.choices import LOWER_IS_BETTER, SCALAR_METRICS
from probekit.errors import ProbekitError
from probekit.probe.metrics import resampled_metrics, speaker_resamples
from probekit.oof import ALL_LAYERS, OOFPredictions

METHOD = "paired speaker bootstrap"
CORRECTION = "holm"


class CompareError(ProbekitError):
    """Predictions cannot be compared (no rows in common, unknown metric); the message says which."""


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values ``(m,)`` of raw p-values ``(m,)`` (family-wise error control)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def bootstrap_p(diff: np.ndarray) -> float:
    """Two-sided p-value that the bootstrap differences ``diff`` ``(B,)`` centre on 0 (NaNs dropped)."""
    d = diff[np.isfinite(diff)]
    if not len(d):
        return float("nan")
    tail = min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0))
    return float(min(1.0, max(2.0 * tail / len(d), 1.0 / (len(d) + 1))))


def _entry_values(oof: OOFPredictions, layer: int, rows: np.ndarray, metric: str, inv: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``metric`` of ``oof``'s ``layer`` on ``rows`` under each speaker weighting ``W`` ``(B, G)`` -> ``(B,)``."""
    i = oof.layer_index(layer)
    values = resampled_metrics(oof.kind, oof.y_true[rows], oof.pred[i][rows], oof.score(layer)[rows], inv, W, names=(metric,))
    if metric not in values:
        raise CompareError(f"metric '{metric}' is not a {oof.kind} metric (have {', '.join(SCALAR_METRICS[oof.kind])})")
    return values[metric]


def _paired(entries: list[tuple[OOFPredictions, int, np.ndarray]], metric: str, best: int | None, level: float, n_boot: int, seed: int):
    """Compare every entry ``(oof, layer, rows)`` (rows aligned across entries, same speakers) with
    the best one; returns ``(best index, point values (E,), per-entry dict list)``."""
    oof0, _, rows0 = entries[0]
    speakers = oof0.speaker[rows0]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    inv, W = speaker_resamples(speakers, n_boot, seed)
    unit = np.ones((1, W.shape[1]))
    point = np.array([_entry_values(o, layer, r, metric, inv, unit)[0] for o, layer, r in entries])
    if best is None:
        ranked = np.where(np.isfinite(point), sign * point, -np.inf)
        best = int(np.argmax(ranked))  # ties: the first (lowest layer), as the results' best does
    boot = np.stack([_entry_values(o, layer, r, metric, inv, W) for o, layer, r in entries])  # (E, B)
    diff = sign * (boot[best][None, :] - boot)  # > 0: the best is better
    is_best = np.arange(len(entries)) == best
    p = np.array([1.0 if is_best[e] else bootstrap_p(diff[e]) for e in range(len(entries))])
    adjusted = np.where(is_best, 1.0, np.nan)
    corrected = ~is_best & np.isfinite(p)
    adjusted[corrected] = holm(p[corrected])
    out = []
    for e in range(len(entries)):
        d = diff[e][np.isfinite(diff[e])]
        lo, hi = (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))) if len(d) else (float("nan"), float("nan"))
        out.append(
            {
                "value": float(point[e]),
                "diff": float(sign * (point[best] - point[e])),
                "diff_ci": [lo, hi],
                "p": float(p[e]),
                "p_adjusted": float(adjusted[e]),
                # An undefined p-value (metric undefined in every resample) cannot separate it from the best.
                "tied": bool(e == best or not np.isfinite(adjusted[e]) or adjusted[e] >= level),
            }
        )
    return best, point, out


def _how(metric: str, level: float, n_boot: int) -> dict:
    """The keys that say how a comparison was made, first in every comparison document."""
    return {"method": METHOD, "correction": CORRECTION, "level": level, "n_boot": n_boot, "metric": metric}


def tied_layers(
    oof: OOFPredictions, metric: str, *, best_layer: int | None = None, level: float = 0.05, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Which layers of one (encoder, probe) are not distinguishable from its best layer.

    ``oof``: its out-of-fold predictions; ``metric``: a scalar metric of ``oof.kind`` (e.g. the
    headline); ``best_layer``: the layer to compare against (``None``: the best pooled ``metric`` of
    the tested rows, ties to the lowest layer, as the results' ``best`` picks it); ``level``: the
    family-wise error rate of the Holm-corrected tests; ``n_boot``/``seed``: the speaker resamples.

    Returns ``{method, correction, level, n_boot, metric, best_layer, tied: [layers],
    per_layer: {layer: {value, diff, diff_ci, p, p_adjusted, tied}}}`` where ``diff`` is how much the
    best layer is better (in the metric's units, positive = better even for lower-is-better
    metrics), ``diff_ci`` its 95% paired-bootstrap interval, ``p`` the raw and ``p_adjusted`` the
    Holm-adjusted p-value (1.0 for the best layer itself). ``per_layer`` keys are ints.
    """
    rows = np.flatnonzero(oof.tested)
    if not len(rows):
        raise CompareError(f"{oof.encoder}/{oof.probe}: no tested rows to compare layers on")
    layers = [int(x) for x in oof.layers]
    best = None if best_layer is None else layers.index(int(best_layer)) if int(best_layer) in layers else None
    if best_layer is not None and best is None:
        raise CompareError(f"{oof.encoder}/{oof.probe}: best layer {best_layer} has no out-of-fold predictions (have {layers})")
    best, _point, per = _paired([(oof, layer, rows) for layer in layers], metric, best, level, n_boot, seed)
    return {
        **_how(metric, level, n_boot),
        "best_layer": layers[best],
        "tied": [layer for layer, e in zip(layers, per) if e["tied"]],
        "per_layer": dict(zip(layers, per)),
    }


def _common_rows(oofs: list[OOFPredictions]) -> list[np.ndarray]:
    """For each oof, positions of the rows tested in all of them, in one shared id order."""
    common = set.intersection(*(set(o.ids[o.tested].tolist()) for o in oofs))
    if not common:
        raise CompareError("the out-of-fold files share no tested rows: " + ", ".join(f"{o.encoder}/{o.probe}" for o in oofs))
    order = np.array(sorted(common))
    out = []
    for o in oofs:
        pos = {i: k for k, i in enumerate(o.ids.tolist())}
        out.append(np.array([pos[i] for i in order]))
    ref = oofs[0]
    for o, r in zip(oofs[1:], out[1:]):
        if not np.array_equal(o.speaker[r], ref.speaker[out[0]]):
            raise CompareError(f"{o.encoder} and {ref.encoder} give the same row ids different speakers; compare runs of one manifest")
        if not np.array_equal(o.y_true[r], ref.y_true[out[0]]):
            raise CompareError(f"{o.encoder} and {ref.encoder} give the same row ids different labels; compare runs of one task")
    return out


def compare_encoders(
    entries: list[tuple[OOFPredictions, int]], metric: str, *, level: float = 0.05, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Several encoders (or probes) at their chosen layers, compared with the best on their common rows.

    ``entries``: ``(oof, layer)`` pairs, typically each encoder's best layer for one probe; rows
    are matched by id and must carry the same speaker and label in every file. Returns
    ``{method, correction, level, n_boot, metric, n_rows, n_speakers, best, entries: [{encoder, probe,
    layer, value, diff, diff_ci, p, p_adjusted, tied}]}``; ``best`` is the index of the best entry.
    Values are recomputed on the common rows, so they can differ from each run's own (all rows).
    """
    if len(entries) < 2:
        raise CompareError("comparing encoders needs at least two entries")
    rows = _common_rows([o for o, _ in entries])
    best, _point, per = _paired([(o, layer, r) for (o, layer), r in zip(entries, rows)], metric, None, level, n_boot, seed)
    return {
        **_how(metric, level, n_boot),
        "n_rows": int(len(rows[0])),
        "n_speakers": int(len(np.unique(entries[0][0].speaker[rows[0]]))),
        "best": best,
        "entries": [{"encoder": o.encoder, "probe": o.probe, "layer": int(layer), **e} for (o, layer), e in zip(entries, per)],
    }


def annotate_results(doc: dict, oofs: list[OOFPredictions], *, level: float = 0.05, n_boot: int | None = None, seed: int | None = None) -> dict:
    """A copy of results document ``doc`` with the tied sets filled in from its out-of-fold files.

    Adds the schema's optional ``rows[].tied_with_best``, ``p_vs_best``, ``diff_vs_best``, ``best[].tied``,
    ``comparison`` and ``encoder_comparison`` (:mod:`probekit.results`). Rows without an out-of-fold file,
    and layer-weighted rows (layer -1, which have a layer of their own to compare), are left as they are.
    ``n_boot``/``seed`` default to the document's ``config.bootstrap`` and ``seeds.bootstrap_seed``;
    with ``n_boot`` 0 nothing is added.
    """
    metric = doc["headline"]["metric"]
    n_boot = int(doc.get("config", {}).get("bootstrap", 1000) if n_boot is None else n_boot)
    seed = int(doc.get("seeds", {}).get("bootstrap_seed", 0) if seed is None else seed)
    by_key = {(o.encoder, o.probe): o for o in oofs}
    out = {**doc, "rows": [dict(r) for r in doc["rows"]], "best": [dict(b) for b in doc["best"]]}
    if n_boot <= 0:  # --bootstrap 0 asks for no resampling: no intervals, so no tied sets either
        return out
    summaries = {}
    for b in out["best"]:
        oof = by_key.get((b["encoder"], b["probe"]))
        if oof is None or b["layer"] == ALL_LAYERS or ALL_LAYERS in oof.layers.tolist():
            continue
        s = tied_layers(oof, metric, best_layer=b["layer"], level=level, n_boot=n_boot, seed=seed)
        summaries[(b["encoder"], b["probe"])] = s
        b["tied"] = sorted(s["tied"])
        b["comparison"] = {k: s[k] for k in ("method", "correction", "level", "n_boot")}
    for r in out["rows"]:
        s = summaries.get((r["encoder"], r["probe"]))
        if s is None or r["layer"] not in s["per_layer"]:
            continue
        e = s["per_layer"][r["layer"]]
        r["tied_with_best"] = e["tied"]
        r["p_vs_best"] = e["p_adjusted"]
        r["diff_vs_best"] = e["diff"]
    per_probe: dict[str, list[tuple[OOFPredictions, int]]] = {}
    for b in doc["best"]:
        oof = by_key.get((b["encoder"], b["probe"]))
        if oof is not None:
            per_probe.setdefault(b["probe"], []).append((oof, b["layer"]))
    comparisons = [compare_encoders(e, metric, level=level, n_boot=n_boot, seed=seed) for e in per_probe.values() if len(e) >= 2]
    if comparisons:
        out["encoder_comparison"] = comparisons
    return out


__all__ = ["CORRECTION", "METHOD", "CompareError", "annotate_results", "bootstrap_p", "compare_encoders", "holm", "tied_layers"]
