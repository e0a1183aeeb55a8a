"""The one core of a layer's evaluation, shared by ``probe``, ``sweep``, ``export``, ``stats`` and ``run``.

Every command that scores a layer goes through the same four steps, so the same (cache, task, probe,
params, protocol, seed) gives the same folds and the same numbers wherever it is asked:

1. :func:`prepare` — the rows, their labels (:func:`probekit.probe.tasks.build_targets`, taken from the
   current manifest when there is one) and the speaker folds (:func:`probekit.probe.splits.make_folds`);
2. :func:`evaluate_layer` — out-of-fold probabilities and decisions of one probe on one layer;
3. :func:`layer_row` — the metric set (:mod:`probekit.probe.metrics`) of those predictions, as a results row;
4. :func:`results_document` — the results document (:mod:`probekit.results`) around the rows.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import clone

from probekit.cache import EmbeddingCache
from probekit.choices import HEADLINE, LOWER_IS_BETTER, SCALAR_METRICS, Protocol
from probekit.identity import file_sha256
from probekit.manifest import Manifest, read_manifest
from probekit.oof import OOFPredictions
from probekit.probe.calibration import calibrate_proba, fit_inner
from probekit.probe.metrics import bootstrap_ci, compute_metrics, fold_metrics
from probekit.probe.probes import accepts, fit_probe
from probekit.probe.splits import make_folds
from probekit.probe.tasks import ProbeInputError, Targets, TaskSpec, build_targets, class_columns
from probekit.results import SCHEMA_VERSION, now_iso

__all__ = [
    "EvalProtocol",
    "Prepared",
    "LayerOutcome",
    "encoder_names",
    "label_source",
    "prepare",
    "read_X",
    "evaluate_layer",
    "oof_predictions",
    "layer_row",
    "best_rows",
    "fold_mean_std",
    "cache_entry",
    "results_document",
    "software_versions",
]


# --------------------------------------------------------------------------------------- names


def _base_name(cache: EmbeddingCache) -> str:
    # Encoders are often recorded as checkpoint paths; the folder name is what a reader recognises.
    model = cache.encoder.rstrip("/")
    return Path(model).name if model else Path(cache.path).stem


# Identity attributes that can tell two caches of one model apart, in the order they are named.
_DISTINGUISHING = ("whisper_mode", "pooling", "dtype", "revision", "channel", "max_layer")


def encoder_names(caches: Sequence[EmbeddingCache]) -> list[str]:
    """The display name of each cache's encoder, used by every command and document.

    A model is named by its hub id's or folder's last part (``whisper-tiny.en``). Two caches of one
    model are told apart by what differs between them, e.g. ``whisper-tiny.en [fast]`` and
    ``whisper-tiny.en [padded]``; the file name is the last resort.
    """
    base = [_base_name(c) for c in caches]
    names = list(base)
    for name in set(base):
        group = [i for i, b in enumerate(base) if b == name]
        if len(group) < 2:
            continue
        keys = [k for k in _DISTINGUISHING if len({str(caches[i].attrs.get(k, "")) for i in group}) > 1]
        for i in group:
            tags = [str(caches[i].attrs.get(k, "")) or "-" for k in keys]
            names[i] = f"{name} [{', '.join(tags)}]" if tags else name
    return [f"{n} ({Path(c.path).stem})" if names.count(n) > 1 else n for n, c in zip(names, caches)]


# ----------------------------------------------------------------------------------- preparing


@dataclass(frozen=True)
class EvalProtocol:
    """How a layer is evaluated: ``cv`` (:class:`probekit.choices.Protocol`), ``folds`` (K of
    speaker-kfold), ``seed`` (folds, probes, bootstrap), ``speaker_column`` (the groups)."""

    cv: str = Protocol.speaker_kfold.value
    folds: int = 5
    seed: int = 0
    speaker_column: str = "speaker"

    def as_dict(self) -> dict:
        return {"cv": str(self.cv), "folds": int(self.folds), "seed": int(self.seed), "speaker_column": self.speaker_column}


@dataclass(frozen=True)
class Prepared:
    """One cache made ready for evaluation.

    ``rows``: ``(n,)`` sorted cache row positions used; ``ids``/``groups``: ``(n,)`` their ids and speakers;
    ``targets``: labels of those rows; ``folds``: ``[(train, test)]`` positions into ``rows``;
    ``labels_from``: where the labels came from (``{"source": "manifest", "path", "sha256"}`` or ``{"source": "cache"}``);
    ``missing``: ids of cache rows the labelling manifest does not list.
    """

    cache: EmbeddingCache
    encoder: str
    rows: np.ndarray
    ids: np.ndarray
    groups: np.ndarray
    targets: Targets
    folds: list
    protocol: EvalProtocol
    labels_from: dict
    missing: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.targets.kind

    def layers(self, wanted: Sequence[int] | None = None) -> list[int]:
        """The hidden states ``wanted`` (default: all of the cache); raises :class:`ProbeInputError` naming
        those out of range."""
        n = self.cache.num_layers
        layers = list(range(n)) if wanted is None else list(wanted)
        bad = [la for la in layers if not 0 <= la < n]
        if bad:
            raise ProbeInputError(f"{self.cache.path} has hidden states 0..{n - 1}; layer(s) {bad} are out of range")
        return layers

    def fold_of(self) -> np.ndarray:
        """``(n,)`` int16: the outer fold whose test part holds each row; ``-1`` for rows never tested."""
        out = np.full(len(self.rows), -1, dtype=np.int16)
        for k, (_tr, te) in enumerate(self.folds):
            out[te] = k
        return out


def label_source(cache: EmbeddingCache, manifest: str | Path | Manifest | None) -> tuple[Manifest | None, dict]:
    """The manifest whose labels a probe uses, and a record of it for the results document.

    An explicit ``manifest`` wins. Otherwise the manifest the cache was extracted from, when that file
    still exists and lists the same audio: a relabelled manifest then needs no re-extraction, and the
    labels stored in the cache at extraction time are never reported in its place. Failing both, the
    cache's stored labels.
    """
    man: Manifest | None = None
    if isinstance(manifest, Manifest):
        man = manifest
    elif manifest is not None:
        man = read_manifest(manifest, check_files=False)
    else:
        recorded = str(cache.attrs.get("manifest", "") or "")
        if recorded and Path(recorded).is_file():
            try:
                candidate = read_manifest(recorded, check_files=False)
            except Exception:  # noqa: BLE001 - an unreadable recorded manifest only means "use the cache's labels"
                candidate = None
            fp = str(cache.attrs.get("manifest_fingerprint", "") or "")
            if candidate is not None and fp and candidate.audio_fingerprint() == fp:
                man = candidate
    if man is None:
        return None, {"source": "cache"}
    return man, {"source": "manifest", "path": str(man.source), "sha256": file_sha256(man.source)}


def _metadata(cache: EmbeddingCache, man: Manifest | None) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Row-aligned metadata columns, the rows present in the label source, and the ids it lacks."""
    if man is None:
        return {k: np.asarray(v, dtype=object) for k, v in cache.metadata.items()}, np.ones(len(cache), dtype=bool), []
    index = {sid: i for i, sid in enumerate(man.ids)}
    pos = np.array([index.get(i, -1) for i in cache.ids], dtype=np.int64)
    present = pos >= 0
    cols = {k: np.asarray(v, dtype=object) for k, v in man.columns().items()}
    metadata = {k: np.where(present, v[np.maximum(pos, 0)], "") for k, v in cols.items()}
    return metadata, present, [str(i) for i, ok in zip(cache.ids, present) if not ok]


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


def prepare(
    cache: EmbeddingCache | str | Path,
    task: TaskSpec,
    protocol: EvalProtocol,
    manifest: str | Path | Manifest | None = None,
    encoder: str | None = None,
    exclude_speakers: Sequence[str] = (),
) -> Prepared:
    """Rows, labels and folds of ``cache`` for ``task`` under ``protocol``.

    ``manifest``: the labelling manifest (see :func:`label_source`); ``encoder``: display name (default
    :func:`encoder_names` of this cache alone); ``exclude_speakers``: speakers left out entirely.
    Raises :class:`ProbeInputError` naming a missing column, an unknown label, too few speakers or a
    single-class training fold.
    """
    cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
    man, source = label_source(cache, manifest)
    metadata, present, missing = _metadata(cache, man)
    if protocol.speaker_column not in metadata:
        raise ProbeInputError(
            f"{cache.path}: no '{protocol.speaker_column}' column; speaker-independent evaluation needs one (add it to the manifest)"
        )
    speakers_all = np.asarray(metadata[protocol.speaker_column], dtype=object).astype(str)
    if exclude_speakers:
        unknown = sorted(set(exclude_speakers) - set(speakers_all))
        if unknown:
            raise ProbeInputError(f"--exclude-speaker {', '.join(unknown)}: not in the '{protocol.speaker_column}' column")
        present &= ~np.isin(speakers_all, list(exclude_speakers))
    rows = np.flatnonzero(present)
    targets = build_targets(task, {k: v[rows] for k, v in metadata.items()})
    rows = rows[targets.mask]
    targets = Targets(y=targets.y, classes=targets.classes, kind=targets.kind, mask=np.ones(len(rows), dtype=bool))
    groups = speakers_all[rows]
    split = np.asarray(metadata["split"], dtype=object)[rows].astype(str) if "split" in metadata else None
    folds = make_folds(str(protocol.cv), groups, targets.y, n_folds=protocol.folds, seed=protocol.seed, split=split)
    _check_training_classes(folds, targets.y, groups, targets.kind, targets.classes)
    return Prepared(
        cache=cache, encoder=encoder or encoder_names([cache])[0], rows=rows, ids=np.asarray(cache.ids)[rows].astype(str),
        groups=groups, targets=targets, folds=folds, protocol=protocol, labels_from=source, missing=missing,
    )


def read_X(prepared: Prepared, layer: int, all_layers: bool = False) -> np.ndarray:
    """The used rows of hidden state ``layer`` as stored (float16 stays float16): ``(n, dim)``; with
    ``all_layers``, every hidden state: ``(n, num_layers, dim)``."""
    cache = prepared.cache
    rows = None if len(prepared.rows) == len(cache) else prepared.rows
    if all_layers:
        return cache.read_rows(rows)
    prepared.layers([layer])
    return cache.read_layer(layer, dtype=None, rows=rows)


# ---------------------------------------------------------------------------------- evaluating


@dataclass(frozen=True)
class LayerOutcome:
    """Out-of-fold predictions of one probe on one layer, over ``Prepared.rows``.

    ``proba``: ``(n, c)`` float, NaN for untested rows (binary: c = 1, P(positive); multiclass: class
    probabilities; multilabel: label probabilities); ``pred``: ``(n,)`` or ``(n, k)`` int decisions;
    ``thresholds``: per outer fold, the tuned thresholds (``None`` when not tuned); ``reports``: per
    fold, what the probe says about its solver and budget (``{}`` when it says nothing); ``seconds``: wall time.
    """

    proba: np.ndarray
    pred: np.ndarray
    thresholds: list | None
    reports: list[dict]
    seconds: float


def _aligned(est, proba: np.ndarray, n_classes: int, kind: str) -> np.ndarray:
    """``predict_proba`` columns spread over every class index (a class absent from training gets 0)."""
    if kind == "multilabel":
        return np.asarray(proba, dtype=np.float64)
    return class_columns(proba, est.classes_, n_classes)


def fold_probabilities(probe, X: np.ndarray, y: np.ndarray, folds, groups: np.ndarray, kind: str, n_classes: int) -> tuple[list, list]:
    """Per fold, the test rows' probabilities of a fresh clone of ``probe`` fitted on the training rows:
    ``(n_test, n_classes)`` (multilabel ``(n_test, k)``); and per fold the probe's report.

    A probe with a batched ``fold_proba(X, y, folds[, groups])`` solves every fold at once (it must
    equal this loop, which tests check); others are cloned and fitted fold by fold.
    """
    if hasattr(probe, "fold_proba"):
        est = clone(probe)
        kw = {"groups": groups} if accepts(est.fold_proba, "groups") else {}
        probas = est.fold_proba(X, y, folds, **kw)
        reports = list(getattr(est, "fold_reports_", None) or [{} for _ in folds])
        return [np.asarray(p, dtype=np.float64) for p in probas], reports
    probas, reports = [], []
    for train, test in folds:
        est = fit_probe(clone(probe), X[train], y[train], groups[train])
        probas.append(_aligned(est, est.predict_proba(X[test]), n_classes, kind))
        reports.append(dict(getattr(est, "report_", None) or {}))
    return probas, reports


def _per_fold_probabilities(probes: list, X: np.ndarray, y: np.ndarray, folds, groups: np.ndarray, kind: str, n_classes: int) -> tuple[list, list]:
    """:func:`fold_probabilities` with estimator ``probes[k]`` for fold ``k``: folds that share one
    estimator object are solved in one call, so a batched probe still solves them together."""
    probas: list = [None] * len(folds)
    reports: list = [None] * len(folds)
    shared: dict[int, list[int]] = {}
    for k, est in enumerate(probes):
        shared.setdefault(id(est), []).append(k)
    for ks in shared.values():
        p, r = fold_probabilities(probes[ks[0]], X, y, [folds[k] for k in ks], groups, kind, n_classes)
        for k, pk, rk in zip(ks, p, r):
            probas[k], reports[k] = pk, rk
    return probas, reports


def evaluate_layer(prepared: Prepared, X: np.ndarray, probe, tune: bool = False, calibrate: str | None = None) -> LayerOutcome:
    """Out-of-fold predictions of ``probe`` (an unfitted estimator) on ``X`` ``(n, dim)`` (or ``(n, L, dim)``
    for a probe over all layers) under ``prepared``'s folds.

    ``probe`` may also be a list with one unfitted estimator per outer fold (a sweep's per-fold choice
    of parameters); folds given the same object are solved together.

    ``calibrate``: ``None``, ``"temperature"`` or ``"isotonic"``: a calibration map per outer fold, fitted on
    inner speaker folds of its training part only (binary and multilabel). ``tune``: F1-optimal thresholds
    from the same inner folds, on the calibrated scores; otherwise 0.5.
    """
    t0 = time.perf_counter()
    kind, y, groups = prepared.kind, prepared.targets.y, prepared.groups
    n_classes = len(prepared.targets.classes)
    per_fold = list(probe) if isinstance(probe, (list, tuple)) else [probe] * len(prepared.folds)
    if len(per_fold) != len(prepared.folds):
        raise ValueError(f"{len(per_fold)} estimators for {len(prepared.folds)} folds")
    probas, reports = _per_fold_probabilities(per_fold, X, y, prepared.folds, groups, kind, n_classes)
    n = len(prepared.rows)
    width = 1 if kind == "binary" else n_classes
    proba = np.full((n, width), np.nan)
    pred = np.zeros((n, n_classes) if kind == "multilabel" else n, dtype=np.int64)
    thresholds: list | None = [] if tune and kind != "multiclass" else None
    for (train, test), p, est in zip(prepared.folds, probas, per_fold):
        if kind == "multiclass":
            proba[test] = p
            pred[test] = p.argmax(1)
            continue
        cal, thr = fit_inner(est, X[train], y[train], groups[train], kind, calibrate=calibrate, tune=tune, seed=prepared.protocol.seed)
        if cal is not None:
            p = calibrate_proba(cal, kind, p)
        thr = np.full(width, 0.5) if thr is None else thr
        if thresholds is not None:
            thresholds.append(thr.tolist())
        score = p[:, 1:2] if kind == "binary" else p
        proba[test] = score
        decided = (score >= thr[None, :]).astype(np.int64)
        pred[test] = decided[:, 0] if kind == "binary" else decided
    return LayerOutcome(proba=proba, pred=pred, thresholds=thresholds, reports=reports, seconds=time.perf_counter() - t0)


def oof_predictions(prepared: Prepared, probe: str, outcomes: Mapping[int, LayerOutcome]) -> OOFPredictions:
    """One (encoder, probe)'s out-of-fold file content (:mod:`probekit.oof`) from its per-layer outcomes
    (layer -> :class:`LayerOutcome`; layer ``-1``: a probe over all layers), layers ascending."""
    layers = sorted(outcomes)
    return OOFPredictions(
        encoder=prepared.encoder, probe=probe, kind=prepared.kind, classes=prepared.targets.classes, ids=prepared.ids,
        speaker=prepared.groups, fold=prepared.fold_of(), y_true=prepared.targets.y, layers=np.array(layers),
        proba=np.stack([outcomes[la].proba for la in layers]), pred=np.stack([outcomes[la].pred for la in layers]),
    )


# ------------------------------------------------------------------------------------ summarising


def fold_mean_std(values) -> tuple[float, float]:
    """Mean and std (ddof=0) of per-fold values over the folds where the metric is defined
    (e.g. ROC-AUC is undefined on a one-class test fold); NaN when none is."""
    vals = np.asarray(values, dtype=float)
    finite = vals[np.isfinite(vals)]
    return (float(finite.mean()), float(finite.std())) if len(finite) else (float("nan"), float("nan"))


def layer_row(prepared: Prepared, layer: int, probe_name: str, outcome: LayerOutcome, n_boot: int = 1000) -> dict:
    """The results row of one (layer, probe): the metric set pooled over all out-of-fold predictions
    (``value``), per-fold ``mean``/``std``, a speaker-bootstrap 95% interval, and the pooled
    ``confusion_matrix`` (multiclass) or ``per_label`` scores (multilabel)."""
    kind, classes, y, groups = prepared.kind, prepared.targets.classes, prepared.targets.y, prepared.groups
    rows = np.sort(np.concatenate([te for _tr, te in prepared.folds]))
    score = outcome.proba[:, 0] if kind == "binary" else outcome.proba
    pooled = compute_metrics(kind, y[rows], outcome.pred[rows], score[rows], classes)
    per_fold = fold_metrics(kind, y, outcome.pred, score, prepared.folds)
    ci = bootstrap_ci(kind, y[rows], outcome.pred[rows], score[rows], groups[rows], classes, n_boot=n_boot, seed=prepared.protocol.seed)
    metrics = {}
    for name in SCALAR_METRICS[kind]:
        mean, std = fold_mean_std(per_fold[name])
        metrics[name] = {"value": pooled[name], "mean": mean, "std": std, "ci_low": ci[name][0], "ci_high": ci[name][1]}
    row = {"encoder": prepared.encoder, "layer": int(layer), "probe": probe_name, "n_folds": len(prepared.folds), "metrics": metrics}
    if kind == "multiclass":
        row["confusion_matrix"] = pooled["confusion_matrix"]
    elif kind == "multilabel":
        stats = ("precision", "recall", "f1", "support")
        row["per_label"] = {c: {k: pooled[f"{k}_per_label"][j] for k in stats} for j, c in enumerate(classes)}
    if outcome.thresholds is not None:
        row["thresholds"] = outcome.thresholds
    if any(outcome.reports):
        row["probe_report"] = outcome.reports
    row["seconds"] = round(float(outcome.seconds), 3)
    return row


def best_rows(rows: list[dict], metric: str, stat: str = "value") -> list[dict]:
    """Per (encoder, probe): the layer with the best ``metric`` ``stat`` (probe ranks by the pooled
    ``value``, a sweep by the ``mean`` over outer folds); ties and undefined values: the lowest layer.
    Each entry's ``value`` is that stat."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best: dict[tuple[str, str], tuple[float, dict]] = {}
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


def cache_entry(prepared: Prepared) -> dict:
    """The results document's ``caches`` entry of one prepared cache (its identity and how it was used)."""
    cache = prepared.cache
    attrs = cache.attrs
    return {
        "encoder": prepared.encoder,
        "path": str(Path(cache.path)),
        "fingerprint": cache.fingerprint,
        "model": cache.encoder,
        "identity": {k: str(attrs.get(k, "")) for k in ("revision", "commit", "whisper_mode", "pooling", "dtype", "channel", "manifest_fingerprint")},
        "num_layers": cache.num_layers,
        "dim": cache.dim,
        "dtype": str(cache.dtype),
        "n_rows": int(len(cache)),
        "n_rows_used": int(len(prepared.rows)),
        "n_speakers": int(len(np.unique(prepared.groups))),
        "n_folds": len(prepared.folds),
        "labels_from": prepared.labels_from,
        "missing_from_manifest": {"count": len(prepared.missing), "ids": prepared.missing[:50]},
    }


def software_versions() -> dict[str, str]:
    """The results document's ``versions``: probekit, Python and the libraries that shape the numbers."""
    import lightgbm
    import sklearn
    import torch

    from probekit import __version__

    return {
        "probekit": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
        "torch": torch.__version__,
    }


def results_document(
    task: TaskSpec,
    classes: Sequence[str],
    aggregate: str,
    config: Mapping,
    seed: int,
    caches: list[dict],
    rows: list[dict],
    metric: str | None = None,
    extra: Mapping | None = None,
) -> dict:
    """The results document (:mod:`probekit.results` schema) every command writes.

    ``aggregate``: the statistic layers are ranked by: ``"value"`` (pooled, ``probe``) or ``"mean"``
    (over outer folds, ``sweep``); ``metric``: the headline (default per task kind).
    """
    headline = metric or HEADLINE[task.kind]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "created": now_iso(),
        "task": {**asdict(task), "classes": list(classes)},
        "headline": {"metric": headline, "aggregate": "pooled" if aggregate == "value" else aggregate},
        "config": dict(config),
        "seeds": {"seed": seed, "bootstrap_seed": seed if aggregate == "value" else None, "fold_seed": seed},
        "versions": software_versions(),
        "caches": caches,
        "rows": rows,
        "best": best_rows(rows, headline, aggregate),
    }
    doc.update(extra or {})
    return doc
