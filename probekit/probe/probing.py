"""Layer-wise probing: for each cache, layer and probe, cross-validate and score.

``run_probe(ProbeConfig) -> ProbeResults`` is the one entry point the CLI and recipes call.
Data flow: cache (+ optional relabelling manifest) -> targets -> speaker folds -> per layer and
probe, out-of-fold predictions -> metrics (pooled, per-fold mean ± std, speaker bootstrap CI)
-> results document -> output folder.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from joblib import Parallel, delayed

from probekit.cache import EmbeddingCache
from probekit.probe.metrics import HEADLINE, LOWER_IS_BETTER, SCALAR_METRICS, bootstrap_ci, compute_metrics
from probekit.probe.probes import PROBES, make_probe, probe_params
from probekit.probe.splits import make_folds
from probekit.probe.tasks import ProbeInputError, TaskSpec, build_targets
from probekit.probe.thresholds import positive_scores, tune_thresholds

# The headline metric's "value" is pooled over all out-of-fold predictions; see docs/probe.md
# for the measurement on EmoDB that decided it.
HEADLINE_AGGREGATE = "pooled"


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe and how.

    ``caches``: cache file paths (one per encoder); ``task``: the target;
    ``probes``: names from :data:`probekit.probe.probes.PROBES`;
    ``params``: ``(("C", 0.1), ("mlp.hidden", 128))``: a bare name applies to every probe that takes it;
    ``layers``: hidden-state indices (``None`` = all); ``cv``: ``speaker-kfold`` | ``loso`` | ``split``;
    ``folds``: K for speaker-kfold; ``jobs``: parallel folds (and LightGBM threads);
    ``manifest``: relabelling manifest joined by id; ``out``: output folder (``None`` = write nothing);
    ``bootstrap``: speaker resamples for the 95% CIs (0 = none).
    """

    caches: tuple[str, ...]
    task: TaskSpec
    probes: tuple[str, ...] = ("logreg",)
    params: tuple[tuple[str, object], ...] = ()
    layers: tuple[int, ...] | None = None
    cv: str = "speaker-kfold"
    folds: int = 5
    seed: int = 0
    jobs: int = 1
    manifest: str | None = None
    out: str | None = None
    class_weight: str | None = None
    tune_thresholds: bool = False
    bootstrap: int = 1000
    speaker_column: str = "speaker"


@dataclass(frozen=True)
class ProbeResults:
    """``document``: the results.json content (see :mod:`probekit.results`); ``files``: what was written."""

    document: dict
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def rows(self) -> list[dict]:
        return self.document["rows"]

    @property
    def best(self) -> list[dict]:
        return self.document["best"]


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, description: str) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, description: str) -> None:
        pass


def parse_layers(spec: str | None) -> tuple[int, ...] | None:
    """``"0-3,6"`` -> ``(0, 1, 2, 3, 6)``; ``None``/``""``/``"all"`` -> ``None`` (every layer)."""
    if spec is None or spec.strip() in ("", "all"):
        return None
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ProbeInputError(f"--layers '{spec}' is not a list of layers such as 0-12 or 2,4,6") from None
    return tuple(sorted(set(out)))


def parse_param(text: str) -> tuple[str, object]:
    """``"C=0.1"`` -> ``("C", 0.1)``: ints, floats, true/false/none are typed; anything else stays a string."""
    if "=" not in text:
        raise ProbeInputError(f"--param '{text}' must look like NAME=VALUE (e.g. C=0.1 or mlp.hidden=256)")
    name, raw = (s.strip() for s in text.split("=", 1))
    low = raw.lower()
    value: object
    if low in ("true", "false"):
        value = low == "true"
    elif low in ("none", "null"):
        value = None
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
    return name, value


def resolve_params(probes: tuple[str, ...], params, seed: int, jobs: int, class_weight: str | None) -> dict[str, dict]:
    """Constructor parameters per probe from ``params`` pairs; errors for names no probe takes."""
    out: dict[str, dict] = {}
    for p in probes:
        if p not in PROBES:
            raise ProbeInputError(f"unknown probe '{p}': use one of {', '.join(PROBES)}")
        allowed = probe_params(p)
        out[p] = {"seed": seed}
        if class_weight is not None:
            out[p]["class_weight"] = class_weight
        if "n_jobs" in allowed:
            # Folds already run in parallel when jobs > 1; one thread per fit keeps the total at --jobs.
            out[p]["n_jobs"] = 1 if jobs > 1 else max(1, jobs)
    for name, value in params:
        target, _, key = name.rpartition(".")
        names = [target] if target else list(probes)
        if target and target not in probes:
            raise ProbeInputError(f"--param {name}: probe '{target}' is not among the selected probes ({', '.join(probes)})")
        hit = [p for p in names if key in probe_params(p)]
        if not hit:
            raise ProbeInputError(f"--param {name}: no selected probe takes '{key}'")
        for p in hit:
            out[p][key] = value
    return out


def _load_rows(cache: EmbeddingCache, config: ProbeConfig, manifest_cols, manifest_index):
    """Row positions to use, their metadata, and the ids missing from the manifest."""
    n = len(cache)
    if manifest_cols is None:
        metadata = {k: np.asarray(v, dtype=object) for k, v in cache.metadata.items()}
        present = np.ones(n, dtype=bool)
        missing: list[str] = []
    else:
        pos = np.array([manifest_index.get(i, -1) for i in cache.ids])
        present = pos >= 0
        missing = [str(i) for i, ok in zip(cache.ids, present) if not ok]
        metadata = {k: np.where(present, np.asarray(v, dtype=object)[np.maximum(pos, 0)], "") for k, v in manifest_cols.items()}
    rows = np.flatnonzero(present)
    sub = {k: v[rows] for k, v in metadata.items()}
    targets = build_targets(config.task, sub)
    rows = rows[targets.mask]
    if config.speaker_column not in metadata:
        raise ProbeInputError(
            f"{cache.path}: no '{config.speaker_column}' column; speaker-independent evaluation needs one (add it to the manifest)"
        )
    return rows, metadata, targets, missing


def _check_training_classes(folds, y, groups, kind, classes) -> None:
    if kind == "multilabel":
        return
    for i, (train, _test) in enumerate(folds):
        present = np.unique(y[train])
        if len(present) < 2:
            speakers = ", ".join(sorted(set(map(str, groups[train])))[:10])
            raise ProbeInputError(
                f"fold {i}: the training rows (speakers {speakers}) hold the single class '{classes[present[0]]}'; "
                "use fewer folds, another --cv, or a target with more variety per speaker"
            )


def _run_fold(probe, X, y, groups, train, test, kind, n_classes, tune, seed):
    est = probe.__class__(**probe.get_params()).fit(X[train], y[train])
    proba = est.predict_proba(X[test])
    thresholds = None
    if kind == "multiclass":
        full = np.zeros((len(test), n_classes))
        full[:, est.classes_] = proba
        return test, full, full.argmax(1), thresholds
    score = positive_scores(kind, proba)
    thr = np.full(1 if kind == "binary" else y.shape[1], 0.5)
    if tune:
        thr = tune_thresholds(probe, X[train], y[train], groups[train], kind, seed=seed)
        thresholds = thr.tolist()
    pred = (score >= (thr[0] if kind == "binary" else thr[None, :])).astype(np.int64)
    return test, score, pred, thresholds


def fold_mean_std(values) -> tuple[float, float]:
    """Mean and std (ddof=0) of per-fold values over the folds where the metric is defined
    (e.g. ROC-AUC is undefined on a one-class test fold); NaN when none is."""
    vals = np.asarray(values, dtype=float)
    finite = vals[np.isfinite(vals)]
    return (float(finite.mean()), float(finite.std())) if len(finite) else (float("nan"), float("nan"))


def pooled_extras(kind: str, classes, pooled: dict) -> dict:
    """A row's ``confusion_matrix`` (multiclass) or ``per_label`` (multilabel) from pooled metrics
    named as :func:`probekit.probe.metrics.compute_metrics` names them; ``{}`` for binary."""
    if kind == "multiclass":
        return {"confusion_matrix": pooled["confusion_matrix"]}
    if kind == "multilabel":
        return {
            "per_label": {
                c: {
                    "precision": pooled["precision_per_label"][j],
                    "recall": pooled["recall_per_label"][j],
                    "f1": pooled["f1_per_label"][j],
                    "support": pooled["support_per_label"][j],
                }
                for j, c in enumerate(classes)
            }
        }
    return {}


def _summarise(kind, classes, y, groups, folds, outs, n_boot, seed) -> tuple[dict, dict]:
    test_rows = np.concatenate([o[0] for o in outs])
    order = np.argsort(test_rows)
    rows = test_rows[order]
    score = np.concatenate([o[1] for o in outs])[order]
    pred = np.concatenate([o[2] for o in outs])[order]
    pooled = compute_metrics(kind, y[rows], pred, score, classes)
    per_fold = [compute_metrics(kind, y[o[0]], o[2], o[1], classes) for o in outs]
    ci = bootstrap_ci(kind, y[rows], pred, score, groups[rows], classes, n_boot=n_boot, seed=seed)
    metrics = {}
    for name in SCALAR_METRICS[kind]:
        mean, std = fold_mean_std([f[name] for f in per_fold])
        metrics[name] = {"value": pooled[name], "mean": mean, "std": std, "ci_low": ci[name][0], "ci_high": ci[name][1]}
    extras = pooled_extras(kind, classes, pooled)
    if outs[0][3] is not None:
        extras["thresholds"] = [o[3] for o in outs]
    return metrics, extras


def software_versions() -> dict[str, str]:
    """The results document's ``versions``: probekit, Python and the libraries that shape the numbers."""
    import lightgbm
    import sklearn

    from probekit import __version__

    return {
        "probekit": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
    }


def best_rows(rows: list[dict], metric: str, stat: str = "value") -> list[dict]:
    """Per (encoder, probe): the layer with the best ``metric`` ``stat`` (a key of the row's metric
    stats: probe ranks by the pooled ``value``, a sweep by the ``mean`` over outer folds); ties and
    undefined values: the first row, i.e. the lowest layer. Each entry's ``value`` is that stat."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        v = r["metrics"][metric][stat]
        v = -np.inf if v is None or not np.isfinite(v) else sign * v
        key = (r["encoder"], r["probe"])
        if key not in best or v > best[key][0]:
            best[key] = (v, r)
    return [
        {"encoder": r["encoder"], "probe": r["probe"], "layer": r["layer"], "metric": metric, "value": r["metrics"][metric][stat]}
        for _v, r in best.values()
    ]


def run_probe(config: ProbeConfig, progress: Progress | None = None) -> ProbeResults:
    """Probe every (cache, layer, probe) of ``config``; write the output folder if ``config.out`` is set.

    Raises :class:`ProbeInputError` for bad input (missing column, unknown label, too few speakers,
    single-class training fold, unknown probe or parameter, layers out of range).
    """
    from probekit.results import SCHEMA_VERSION, now_iso, write_outputs

    progress = progress or _NoProgress()
    if not config.caches:
        raise ProbeInputError("give at least one cache file")
    if config.tune_thresholds and config.task.kind == "multiclass":
        raise ProbeInputError("--tune-thresholds applies to binary and multilabel tasks; a multiclass probe predicts the most probable class")
    params = resolve_params(tuple(config.probes), config.params, config.seed, config.jobs, config.class_weight)
    for name, p in params.items():
        make_probe(name, **p)  # fail on a bad value before any work
    manifest_cols = manifest_index = None
    if config.manifest:
        from probekit.manifest import read_manifest

        man = read_manifest(config.manifest, check_files=False)
        manifest_cols = {k: np.asarray(v, dtype=object) for k, v in man.columns().items()}
        manifest_index = {sid: i for i, sid in enumerate(man.ids)}

    plans = []
    encoders_seen: set[str] = set()
    for path in config.caches:
        cache = EmbeddingCache(path)
        rows, metadata, targets, missing = _load_rows(cache, config, manifest_cols, manifest_index)
        groups = np.asarray(metadata[config.speaker_column], dtype=object)[rows].astype(str)
        split = np.asarray(metadata["split"], dtype=object)[rows].astype(str) if "split" in metadata else None
        folds = make_folds(config.cv, groups, targets.y, n_folds=config.folds, seed=config.seed, split=split)
        _check_training_classes(folds, targets.y, groups, targets.kind, targets.classes)
        layers = config.layers if config.layers is not None else tuple(range(cache.num_layers))
        bad = [layer for layer in layers if not 0 <= layer < cache.num_layers]
        if bad:
            raise ProbeInputError(f"--layers: {cache.path} has hidden states 0..{cache.num_layers - 1}; {bad} are out of range")
        # Encoders are often recorded as checkpoint paths; the folder name is what a reader recognises.
        name = Path(cache.encoder.rstrip("/")).name if cache.encoder else Path(path).stem
        if name in encoders_seen:
            name = f"{name} ({Path(path).stem})"
        encoders_seen.add(name)
        plans.append((cache, name, rows, groups, targets, folds, layers, missing))
    classes = plans[0][4].classes
    for p in plans[1:]:
        if p[4].classes != classes:
            raise ProbeInputError(f"{p[0].path} yields classes {p[4].classes}, unlike {plans[0][0].path} ({classes}); probe them separately")

    progress.start(sum(len(p[6]) * len(config.probes) * len(p[5]) for p in plans))
    kind = config.task.kind
    rows_out: list[dict] = []
    caches_out: list[dict] = []
    pool = Parallel(n_jobs=config.jobs, return_as="generator") if config.jobs > 1 else None
    for cache, encoder, rows, groups, targets, folds, layers, missing in plans:
        y = targets.y
        caches_out.append(
            {
                "encoder": encoder,
                "path": str(Path(cache.path)),
                "fingerprint": cache.fingerprint,
                "num_layers": cache.num_layers,
                "dim": cache.dim,
                "dtype": str(cache.dtype),
                "n_rows": int(len(cache)),
                "n_rows_used": int(len(rows)),
                "n_speakers": int(len(np.unique(groups))),
                "n_folds": len(folds),
                "missing_from_manifest": {"count": len(missing), "ids": missing[:50]},
            }
        )
        for layer in layers:
            X = cache.read_layer(layer, rows=rows)
            for probe_name in config.probes:
                probe = make_probe(probe_name, **params[probe_name])
                jobs = (
                    delayed(_run_fold)(probe, X, y, groups, tr, te, kind, len(targets.classes), config.tune_thresholds, config.seed)
                    for tr, te in folds
                )
                outs = []
                for out in pool(jobs) if pool is not None else (j[0](*j[1], **j[2]) for j in jobs):
                    outs.append(out)
                    progress.advance(f"{encoder} layer {layer} {probe_name}")
                metrics, extras = _summarise(kind, targets.classes, y, groups, folds, outs, config.bootstrap, config.seed)
                rows_out.append(
                    {"encoder": encoder, "layer": int(layer), "probe": probe_name, "n_folds": len(folds), "metrics": metrics, **extras}
                )
    headline = HEADLINE[kind]
    cfg = asdict(config)
    cfg.pop("out")
    cfg["caches"] = [str(c) for c in config.caches]
    cfg["params"] = [[k, v] for k, v in config.params]
    cfg["probe_params"] = params
    doc = {
        "schema_version": SCHEMA_VERSION,
        "created": now_iso(),
        "task": {**asdict(config.task), "classes": list(classes)},
        "headline": {"metric": headline, "aggregate": HEADLINE_AGGREGATE},
        "config": cfg,
        "seeds": {"seed": config.seed, "bootstrap_seed": config.seed, "fold_seed": config.seed},
        "versions": software_versions(),
        "caches": caches_out,
        "rows": rows_out,
        "best": best_rows(rows_out, headline),
    }
    files = write_outputs(doc, Path(config.out)) if config.out else {}
    return ProbeResults(document=doc, files=files)
