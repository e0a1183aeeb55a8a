"""The results document: ``results.json`` (schema below), ``results.csv``, and writing the output folder.

Schema (``schema_version`` 1)::

    schema_version  int, 1
    created         ISO-8601 UTC timestamp (the only field that differs between identical runs)
    task            {kind, target, positive, labels, min_support, classes: [str]}
    headline        {metric: "f1" | "uar" | "weighted_f1", aggregate: "pooled" (probe) | "mean" (sweep)}
    config          the ProbeConfig (without the output folder), plus probe_params: {probe: {param: value}}
    seeds           {seed, bootstrap_seed, fold_seed}
    versions        {probekit, python, numpy, scikit-learn, lightgbm}
    caches          [{encoder, path, fingerprint, num_layers, dim, dtype, n_rows, n_rows_used,
                      n_speakers, n_folds, missing_from_manifest: {count, ids}}]
    rows            [{encoder, layer, probe, n_folds,
                      metrics: {name: {value, mean, std, ci_low, ci_high}},
                      confusion_matrix?  (multiclass: [[int]], rows = truth, classes in task.classes order)
                      per_label?         (multilabel: {label: {precision, recall, f1, support}})
                      thresholds?        (when tuned: per outer fold, [float] per label / positive class)}]
    best            [{encoder, probe, layer, metric, value}]   one per (encoder, probe), by the headline
                    metric's ``aggregate`` stat (``value`` for pooled, ``mean`` for mean), which ``value`` repeats

Optional fields (absent from older documents; readers must not require them):

    rows[].layer            -1 for a probe over all hidden states (``input_layers = "all"``, e.g. layer-weights)
    rows[].layer_weights    [float] * num_layers, that probe's softmax layer weights, mean over folds
    rows[].layer_weights_std  [float] * num_layers, their std (ddof=0) over folds
    rows[].tied_with_best   bool: not distinguishable from its (encoder, probe)'s best layer (probekit.probe.compare)
    rows[].p_vs_best        Holm-adjusted p-value of the paired speaker bootstrap against the best layer (1.0 at the best)
    rows[].diff_vs_best     best minus this row in the headline metric (sign flipped for lower-is-better metrics)
    best[].tied             [int] layers tied with the best, the best included, ascending
    best[].comparison       {method: "paired speaker bootstrap", correction: "holm", level, n_boot}
    best[].calibration      binary/multilabel: {layer, ece, n, n_bins, bins: [{low, high, count, mean_predicted,
                            observed}], per_label?: {label: ece}} of the best layer's out-of-fold probabilities
    encoder_comparison      [{method, correction, level, n_boot, metric, n_rows, n_speakers, best (index),
                              entries: [{encoder, probe, layer, value, diff, diff_ci, p, p_adjusted, tied}]}]
                            one per probe with two or more encoders, each at its best layer, on their common rows

``value`` is pooled over all out-of-fold predictions; ``mean``/``std`` (ddof=0) are over folds; ``ci_low``/
``ci_high`` bound a 95% bootstrap interval resampling speakers. Undefined numbers are ``null``.

``probekit sweep`` writes the same document (:func:`probekit.probe.sweep.sweep_document`) with the
additions docs/sweep.md lists (``best_params``, ``fold_params``, ``inner_score``, ``n_candidates``, ``sweep``).
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from probekit.choices import SCALAR_METRICS

SCHEMA_VERSION = 1
STAT_KEYS = ("value", "mean", "std", "ci_low", "ci_high")


class ResultsSchemaError(ProbekitError, ValueError):
    """A results document does not follow the schema; ``problems`` lists every deviation."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("results.json does not follow the schema:\n  " + "\n  ".join(problems[:30]))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def strict_json(obj):
    """NaN/inf -> None so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalar
        return strict_json(obj.item())
    return obj


def validate_results(doc: dict) -> None:
    """Raise :class:`ResultsSchemaError` listing every way ``doc`` departs from the schema."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ResultsSchemaError(["the document is not a JSON object"])
    version = doc.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        problems.append(f"schema_version {version!r} is not one this probekit reads (1..{SCHEMA_VERSION})")
    for key, typ in (("task", dict), ("headline", dict), ("config", dict), ("seeds", dict), ("versions", dict), ("caches", list), ("rows", list), ("best", list)):
        if not isinstance(doc.get(key), typ):
            problems.append(f"'{key}' is missing or not a {typ.__name__}")
    if problems:
        raise ResultsSchemaError(problems)
    kind = doc["task"].get("kind")
    if kind not in SCALAR_METRICS:
        raise ResultsSchemaError([f"task.kind {kind!r} is unknown"])
    if doc["headline"].get("metric") not in SCALAR_METRICS[kind]:
        problems.append(f"headline.metric {doc['headline'].get('metric')!r} is not a {kind} metric")
    for i, row in enumerate(doc["rows"]):
        for key in ("encoder", "layer", "probe", "metrics"):
            if key not in row:
                problems.append(f"rows[{i}] lacks '{key}'")
        metrics = row.get("metrics", {})
        for name in SCALAR_METRICS[kind]:
            stats = metrics.get(name)
            if not isinstance(stats, dict):
                problems.append(f"rows[{i}].metrics lacks '{name}'")
                continue
            for s in STAT_KEYS:
                if s not in stats or not (stats[s] is None or isinstance(stats[s], (int, float))):
                    problems.append(f"rows[{i}].metrics.{name}.{s} is missing or not a number")
        if kind == "multiclass" and "confusion_matrix" not in row:
            problems.append(f"rows[{i}] lacks 'confusion_matrix'")
        if kind == "multilabel" and "per_label" not in row:
            problems.append(f"rows[{i}] lacks 'per_label'")
    for i, b in enumerate(doc["best"]):
        for key in ("encoder", "probe", "layer", "metric", "value"):
            if key not in b:
                problems.append(f"best[{i}] lacks '{key}'")
    if problems:
        raise ResultsSchemaError(problems)


def load_results(path: str | Path) -> dict:
    """Read and validate a results.json written by this or an older probekit."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsSchemaError([f"{path}: file not found"]) from None
    except json.JSONDecodeError as exc:
        raise ResultsSchemaError([f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})"]) from None
    validate_results(doc)
    return doc


def write_results(doc: dict, path: str | Path) -> Path:
    """Validate and write ``doc`` as strict, indented JSON."""
    doc = strict_json(doc)
    validate_results(doc)
    path = Path(path)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_csv(doc: dict, path: str | Path) -> Path:
    """One line per (encoder, layer, probe): ``<metric>``, ``<metric>_mean``, ``_std``, ``_ci_low``, ``_ci_high``, ``best``."""
    kind = doc["task"]["kind"]
    best = {(b["encoder"], b["probe"], b["layer"]) for b in doc["best"]}
    header = ["encoder", "layer", "probe", "best"]
    for name in SCALAR_METRICS[kind]:
        header += [name, f"{name}_mean", f"{name}_std", f"{name}_ci_low", f"{name}_ci_high"]
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in doc["rows"]:
            line = [r["encoder"], r["layer"], r["probe"], int((r["encoder"], r["probe"], r["layer"]) in best)]
            for name in SCALAR_METRICS[kind]:
                s = r["metrics"][name]
                line += ["" if s[k] is None else f"{s[k]:.6f}" for k in STAT_KEYS]
            w.writerow(line)
    return path
