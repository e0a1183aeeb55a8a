"""Hyperparameter sweeps over every layer with nested, speaker-grouped cross-validation.

For each cache, layer and outer fold ``k``, every candidate parameter set is scored on the INNER
speaker-grouped folds of outer fold ``k``'s training part only; the best mean inner score picks the
parameters, which are then refitted on the whole training part and scored once on outer test fold
``k``. The layer curve is the mean over outer folds of those outer scores, so choosing parameters
never sees a test fold.

Every computed cell (cache, task, layer, probe, params, fold) is one record in an append-only
:class:`~probekit.probe.store.ResultStore`; a rerun computes only the cells that are missing, so an
interrupted sweep resumes and a widened grid computes only its new cells.

Work is cut into layer jobs (:class:`LayerJob`): one job reads one layer from the HDF5 file and
computes all of its missing cells; ``logreg-fast`` solves all of them as one batched problem.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from probekit.cache import EmbeddingCache
from probekit.probe.distributed import run_jobs
from probekit.probe.fastlogreg import decision_batched, fit_batched, preconditioner, to_float32
from probekit.choices import HEADLINE, LOWER_IS_BETTER, SCALAR_METRICS, Protocol, TaskKind
from probekit.probe.evaluate import (
    EvalProtocol,
    LayerOutcome,
    best_rows,
    cache_entry,
    encoder_names,
    evaluate_layer,
    fold_mean_std,
    fold_probabilities,
    layer_row,
    oof_predictions,
    prepare,
    read_X,
    results_document,
)
from probekit.oof import OOFPredictions
from probekit.probe.calibration import annotate_calibration
from probekit.probe.compare import annotate_results
from probekit.probe.metrics import confusion_counts, resampled_point
from probekit.probe.probes import PROBES, make_probe, probe_params
from probekit.probe.splits import make_folds
from probekit.probe.store import ResultStore, cell_key, params_key, stable_hash
from probekit.probe.tasks import ProbeInputError, Targets, TaskSpec
from probekit.progress import NoProgress, Progress

__all__ = [
    "SweepError",
    "SweepSpec",
    "SweepResult",
    "LayerJob",
    "parse_range",
    "candidate_params",
    "run_layer_job",
    "run_sweep",
    "sweep_document",
    "write_outputs",
]

OUTER_TEST = -1
NOT_USED = -2
# logreg-fast solves each outer fold's cells on its own training rows when every outer fold brings
# at least this many problems (cells x labels); narrower products lose more speed than rows save.
SPLIT_MIN_WIDTH = 64


class SweepError(ProbekitError, ValueError):
    """A sweep specification or its input cannot be used; the message names what to fix."""


# --------------------------------------------------------------------------- specification


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep.

    grid: ``(("C", (0.01, 0.1, 1.0)), ...)``: the cartesian product is searched.
    ranges: ``(("C", 1e-3, 1e2, "log"), ...)`` with ``trials > 0``: random search, ``trials`` draws.
    layers: hidden-state indices, or ``None`` for all. cv: outer protocol (``speaker-kfold``,
    ``loso`` or ``split``); inner selection always uses ``inner_folds`` speaker-grouped folds.
    bootstrap: speaker resamples of the out-of-fold predictions for the 95% intervals and the tied
    layers (0 = neither), as ``probe --bootstrap``.
    """

    task: str
    target: str
    positive: str | None = None
    labels: tuple[str, ...] | None = None
    min_support: int = 1
    probe: str = "logreg-fast"
    grid: tuple[tuple[str, tuple], ...] = ()
    ranges: tuple[tuple[str, float, float, str], ...] = ()
    trials: int = 0
    layers: tuple[int, ...] | None = None
    cv: str = "speaker-kfold"
    outer_folds: int = 5
    inner_folds: int = 3
    seed: int = 0
    metric: str | None = None
    manifest: str | None = None
    bootstrap: int = 1000

    def headline(self) -> str:
        return self.metric or HEADLINE[self.task]

    def task_spec(self) -> TaskSpec:
        """The labels this sweep trains on, as ``probekit probe`` defines them."""
        return TaskSpec(self.task, self.target, self.positive, self.labels, self.min_support)

    def problems(self) -> list[str]:
        """Every way this spec is unusable, as messages naming the field; empty when it is fine.
        Checked before any work by ``probekit sweep``, recipes' ``--check`` and :func:`run_sweep`."""
        out = []
        if self.task not in TaskKind.names():
            return [f"task = {self.task!r}; use one of {', '.join(TaskKind.names())}"]
        if self.cv not in Protocol.names():
            out.append(f"cv = {self.cv!r}; use one of {', '.join(Protocol.names())}")
        if self.probe not in PROBES:
            return out + [f"unknown probe '{self.probe}'; use one of {', '.join(PROBES)}"]
        allowed = probe_params(self.probe)
        for kind, names in (("grid", [n for n, _ in self.grid]), ("range", [r[0] for r in self.ranges])):
            for name in names:
                if name not in allowed:
                    out.append(f"{kind} parameter '{name}' is not a parameter of probe '{self.probe}' ({', '.join(sorted(allowed))})")
        if self.trials > 0 and not self.ranges:
            out.append("trials needs at least one range NAME = \"LOW:HIGH[:log]\"")
        for name, value in (("outer_folds", self.outer_folds), ("inner_folds", self.inner_folds)):
            if value < 2:
                out.append(f"{name} must be at least 2, not {value}")
        if self.bootstrap < 0:
            out.append(f"bootstrap must be 0 (none) or more resamples, not {self.bootstrap}")
        h = self.headline()
        if h not in SCALAR_METRICS[self.task] or h in LOWER_IS_BETTER:
            ok = [m for m in SCALAR_METRICS[self.task] if m not in LOWER_IS_BETTER]
            out.append(f"metric {h!r} cannot select parameters for a {self.task} task; use one of {', '.join(ok)}")
        return out

    def protocol(self) -> EvalProtocol:
        """The outer protocol, as ``probekit probe`` takes it: the same folds for the same settings."""
        return EvalProtocol(cv=str(self.cv), folds=self.outer_folds, seed=self.seed)

    def task_definition(self) -> dict:
        """Everything that defines the labels and the folds; its hash keys the store.

        ``definition`` versions how labels and folds are derived from these fields (2: labels from
        :func:`probekit.probe.tasks.build_targets`, folds from :func:`probekit.probe.splits.make_folds`), so a
        store written under another derivation is refused rather than mixed."""
        fields = ("task", "target", "positive", "min_support", "cv", "outer_folds", "inner_folds", "seed")
        labels = list(self.labels) if self.labels else None
        return {"definition": 2, **{name: getattr(self, name) for name in fields}, "labels": labels}


def parse_range(items: Sequence[str]) -> tuple[tuple[str, float, float, str], ...]:
    """``["C=1e-3:1e2:log"]`` -> ``(("C", 0.001, 100.0, "log"),)``; scale ``log``, ``lin`` or ``int``."""
    out = []
    for item in items:
        name, sep, spec = item.partition("=")
        parts = spec.split(":")
        if not sep or len(parts) not in (2, 3):
            raise SweepError(f"--range {item!r}: write NAME=LOW:HIGH[:log|lin|int], e.g. C=1e-3:1e2:log")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError as exc:
            raise SweepError(f"--range {item!r}: LOW and HIGH must be numbers") from exc
        scale = parts[2] if len(parts) == 3 else "lin"
        if scale not in ("log", "lin", "int") or not lo < hi or (scale == "log" and lo <= 0):
            raise SweepError(f"--range {item!r}: need LOW < HIGH (and LOW > 0 for log) and a scale of log, lin or int")
        out.append((name.strip(), lo, hi, scale))
    return tuple(out)


def candidate_params(spec: SweepSpec) -> list[dict]:
    """The parameter sets to try, in a fixed order (ties in selection go to the earlier one)."""
    grid = [dict(zip([n for n, _ in spec.grid], combo)) for combo in itertools.product(*[v for _, v in spec.grid])]
    if spec.trials > 0:  # with ranges: SweepSpec.problems, checked before, says so
        rng = np.random.default_rng(spec.seed)
        fixed = grid or [{}]
        out = []
        for _ in range(spec.trials):
            p = dict(fixed[int(rng.integers(len(fixed)))])
            for name, lo, hi, scale in spec.ranges:
                u = rng.random()
                if scale == "log":
                    v = float(f"{math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))):.4g}")
                elif scale == "int":
                    v = int(lo + math.floor(u * (hi - lo + 1)))
                else:
                    v = float(f"{lo + u * (hi - lo):.4g}")
                p[name] = v
            if p not in out:
                out.append(p)
        return out
    return grid  # no grid: one empty parameter set (the product of no axes)


# --------------------------------------------------------------------------- labels and folds


def indicator(targets: Targets) -> np.ndarray:
    """``(n, k)`` uint8 0/1 columns for the batched solver: binary one column (the positive class),
    multiclass one-hot over ``targets.classes``, multilabel the label indicator itself."""
    if targets.kind == "binary":
        return targets.y.astype(np.uint8)[:, None]
    if targets.kind == "multiclass":
        return np.eye(len(targets.classes), dtype=np.uint8)[targets.y]
    return targets.y.astype(np.uint8)


def fold_table(spec: SweepSpec, groups: np.ndarray, y: np.ndarray, outer: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``(K, n)`` int8: for outer fold k, row i is ``-1`` (outer test), its inner fold index, or
    ``-2`` (not used, e.g. a split value other than train/test).

    ``outer``: the outer folds, from :func:`probekit.probe.evaluate.prepare` (the folds ``probe``
    uses for the same protocol); ``y``: ``Targets.y``, used for stratification. The inner folds of
    outer fold k are speaker-grouped folds of outer fold k's training rows only.
    """
    groups = np.asarray(groups).astype(str)
    table = np.full((len(outer), len(groups)), NOT_USED, dtype=np.int8)
    for k, (tr, te) in enumerate(outer):
        table[k, te] = OUTER_TEST
        n_speakers = len(np.unique(groups[tr]))
        if n_speakers < spec.inner_folds:
            raise SweepError(
                f"outer fold {k}: its training part has {n_speakers} speaker(s), too few for {spec.inner_folds} inner folds; lower --inner-folds"
            )
        try:
            inner = make_folds("speaker-kfold", groups[tr], y[tr], spec.inner_folds, spec.seed + 1 + k)
        except ProbeInputError as exc:
            raise SweepError(f"inner folds of outer fold {k}: {exc}") from exc
        for j, (_, ite) in enumerate(inner):
            table[k, tr[ite]] = j
    return table


def fold_rows(table: np.ndarray, fold: str) -> tuple[np.ndarray, np.ndarray]:
    """Training and test rows of fold ``"o{k}"`` (outer) or ``"o{k}/i{j}"`` (inner of outer k)."""
    outer, _, inner = fold.partition("/")
    t = table[int(outer[1:])]
    if inner:
        j = int(inner[1:])
        return np.flatnonzero((t >= 0) & (t != j)), np.flatnonzero(t == j)
    return np.flatnonzero(t >= 0), np.flatnonzero(t == OUTER_TEST)


# --------------------------------------------------------------------------- computing cells


def cell_metrics(kind: str, y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """The scalar metrics of one cell, named and defined as ``probekit probe`` does (shapes as in
    :func:`probekit.probe.metrics.compute_metrics`; a record's ``scores`` hold one number per metric).
    Computed by the vectorised metrics (:func:`probekit.probe.metrics.resampled_point`, tested equal to
    scikit-learn's): scikit-learn's input checks cost about 40 ms per cell, more than a batched fit's share.
    """
    return resampled_point(kind, y_true, y_pred, y_score, np.zeros(len(y_true), dtype=np.int8), classes)


@dataclass(frozen=True)
class LayerJob:
    """All missing cells of one (cache, layer): plain data, cheap to ship to a worker.

    ``rows``: used row positions in the cache (sorted); ``y``: ``Targets.y`` of those rows
    (``(n,)`` class index, 1 = positive for binary, or ``(n, k)`` 0/1 for multilabel), compact dtype;
    ``classes``: ``Targets.classes``; ``table``: ``(K, len(rows))`` int8 fold assignment
    (see :func:`fold_table`); ``cells``: ``((params, fold), ...)``.
    """

    cache_path: str
    layer: int
    kind: str
    probe: str
    rows: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    table: np.ndarray
    cells: tuple
    groups: np.ndarray | None = None


def cell_result(kind: str, classes: Sequence[str], params: dict, fold: str, y_true: np.ndarray, y_pred: np.ndarray,
                y_score: np.ndarray) -> tuple:
    """``(params, fold, scores, n_test, confusion)`` of one cell. ``confusion``
    (:func:`probekit.probe.metrics.confusion_counts`) only for an outer cell (fold ``o{k}``), else ``None``:
    the store keeps an outer cell's counts; inner cells only select parameters."""
    confusion = confusion_counts(kind, y_true, y_pred, len(classes)) if "/" not in fold else None
    return params, fold, cell_metrics(kind, y_true, y_pred, y_score, classes), len(y_true), confusion


def _generic_cells(X: np.ndarray, job: LayerJob) -> list[tuple]:
    """Cells of any registered probe, through the core's :func:`~probekit.probe.evaluate.fold_probabilities`:
    one call per (outer fold, parameter set), so a batched probe solves those folds at once while the
    cells of one outer fold still run together, before the next outer fold's."""
    by_params: dict[tuple[str, str], list[int]] = {}
    for c, (params, fold) in enumerate(job.cells):
        by_params.setdefault((fold.split("/")[0], params_key(params)), []).append(c)
    groups = job.groups if job.groups is not None else np.zeros(len(job.rows), dtype=str)
    out: dict[int, tuple] = {}
    for cells in by_params.values():
        params = job.cells[cells[0]][0]
        folds = [fold_rows(job.table, job.cells[c][1]) for c in cells]
        probas, _reports = fold_probabilities(make_probe(job.probe, **params), X, job.y, folds, groups, job.kind, len(job.classes))
        for c, (_tr, te), proba in zip(cells, folds, probas):
            if job.kind == "multilabel":
                score, pred = proba, (proba >= 0.5).astype(np.int64)
            elif job.kind == "binary":
                score = proba[:, 1]
                pred = (score >= 0.5).astype(np.int64)
            else:
                score, pred = proba, proba.argmax(1)
            out[c] = cell_result(job.kind, job.classes, params, job.cells[c][1], job.y[te], pred, score)
    return [out[c] for c in range(len(job.cells))]


def _fast_cells(X: torch.Tensor, job: LayerJob) -> list[tuple]:
    """All cells of the job as batched solves: groups = (fold, C). ``X``: ``(n, d)`` float32.

    When each outer fold brings enough problems (cells x labels) to keep the products wide, the cells of
    outer fold k (its inner folds and itself) are solved on outer fold k's training rows only (none of them
    trains on its test rows); narrow jobs (e.g. binary) stay one solve, where width matters more. One
    preconditioner serves all of the layer's solves.
    """
    for params, _ in job.cells:
        extra = set(params) - {"C"}
        if extra:
            raise SweepError(f"logreg-fast takes only C; got {sorted(extra)}")
    Y = indicator(Targets(job.y, job.classes, job.kind, np.ones(len(job.y), bool)))
    split_rows = {f: fold_rows(job.table, f) for f in {fold for _, fold in job.cells}}  # (train, test)
    by_outer: dict[int, list[int]] = {}
    for g, (_, fold) in enumerate(job.cells):
        by_outer.setdefault(int(fold.split("/")[0][1:]), []).append(g)
    if len(by_outer) > 1 and min(len(gs) for gs in by_outer.values()) * Y.shape[1] >= SPLIT_MIN_WIDTH:
        parts = [(np.flatnonzero(job.table[k] >= 0), gs) for k, gs in by_outer.items()]
    else:
        parts = [(np.arange(len(job.rows)), list(range(len(job.cells))))]
    pre = preconditioner(X, torch.from_numpy((job.table >= 0).any(0)))
    decisions: dict[int, np.ndarray] = {}
    for rows, gs in parts:
        folds = sorted({job.cells[g][1] for g in gs})
        fidx = {f: i for i, f in enumerate(folds)}
        pos = np.full(len(job.rows), -1)
        pos[rows] = np.arange(len(rows))
        masks = np.zeros((len(rows), len(folds)), dtype=bool)
        for f in folds:
            masks[pos[split_rows[f][0]], fidx[f]] = True  # training rows lie within `rows`
        Xp = X if len(rows) == len(job.rows) else torch.index_select(X, 0, torch.from_numpy(rows))
        fit = fit_batched(Xp, Y[rows], masks, [fidx[job.cells[g][1]] for g in gs], [float(job.cells[g][0].get("C", 1.0)) for g in gs], precond=pre)
        del Xp
        # Score each test fold once for all of its cells (one product instead of one per C value).
        for f in folds:
            local = [i for i, g in enumerate(gs) if job.cells[g][1] == f]
            S = decision_batched(torch.index_select(X, 0, torch.from_numpy(split_rows[f][1])), fit, local)  # (n_test, len(local), k)
            decisions.update({gs[i]: S[:, j, :] for j, i in enumerate(local)})
    out = []
    for g, (params, fold) in enumerate(job.cells):
        te = split_rows[fold][1]
        S = decisions.pop(g)  # (n_test, k) decision values, threshold 0
        if job.kind == "binary":
            score, pred = S[:, 0], (S[:, 0] > 0).astype(np.int64)
        elif job.kind == "multiclass":
            score, pred = S, S.argmax(1)
        else:
            score, pred = S, (S > 0).astype(np.int64)
        out.append(cell_result(job.kind, job.classes, params, fold, job.y[te], pred, score))
    return out


def run_layer_job(job: LayerJob) -> list[tuple]:
    """Read the job's layer from the cache (float16 stays float16) and compute its cells.

    Returns ``[(params, fold, scores, n_test, confusion), ...]`` (see :func:`cell_result`). Runs in
    a worker: only this job's data.
    """
    cache = EmbeddingCache(job.cache_path)
    rows = None if len(job.rows) == cache.n_segments else job.rows
    X = cache.read_layer(job.layer, dtype=None, rows=rows)
    if job.probe == "logreg-fast":
        # One float32 copy serves the solves and the scoring (test rows converted from float16
        # per cell cost more than the whole solve at 80,000 segments); the float16 one is dropped.
        X32 = to_float32(X)
        del X
        return _fast_cells(X32, job)
    return _generic_cells(X, job)


# --------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    """What a sweep found: ``rows``, one per (cache, layer) in the :mod:`probekit.results` schema plus the
    sweep columns (docs/sweep.md; ``inner_score``: mean over outer folds of the selected candidate's mean
    inner score); the document's ``caches`` and ``classes`` (the same for every cache); the cells
    ``computed`` in this run and ``reused`` from the store; ``oof``, per (encoder, probe) the out-of-fold
    predictions at each outer fold's selected parameters (:func:`_refit`)."""

    rows: list[dict]
    headline: str
    computed: int
    reused: int
    store: Path
    spec: SweepSpec
    caches: list[dict] = field(default_factory=list)
    classes: tuple[str, ...] = ()
    oof: list[OOFPredictions] = field(default_factory=list)

    @property
    def best(self) -> list[dict]:
        """Per (encoder, probe): the layer with the best headline mean over outer folds (the layer curve's peak)."""
        return best_rows(self.rows, self.headline, "mean")


def outer_summary(kind: str, outer: Sequence[Mapping], core: Mapping) -> dict:
    """``metrics`` of one layer's results row: ``mean``/``std`` over ``outer``, the store records of the outer
    cells at the selected parameters (the nested CV's scores, which rank the layers); ``value`` and
    ``ci_low``/``ci_high`` from ``core``, the row :func:`_refit` makes of the out-of-fold predictions."""
    metrics = {}
    for name in SCALAR_METRICS[kind]:
        mean, std = fold_mean_std([rec["scores"][name] for rec in outer])
        c = core["metrics"][name]
        metrics[name] = {"value": c["value"], "mean": mean, "std": std, "ci_low": c["ci_low"], "ci_high": c["ci_high"]}
    return metrics


@dataclass
class _Run:
    """One sweep run's store, options and cell counts (cells counted once each, computed or reused)."""

    spec: SweepSpec
    store: ResultStore
    backend: str
    n_jobs: int
    scheduler: str | None
    progress: Progress
    computed: int = 0
    reused: int = 0
    counted: set = field(default_factory=set)

    def found(self, keys: set, where: str) -> None:
        """Count the stored cells ``keys`` of ``where`` as done; each is reused once per run however often it is found."""
        self.progress.advance(len(keys), f"{where}: stored cells")
        self.reused += len(keys - self.counted)
        self.counted |= keys


@dataclass(frozen=True)
class _CacheWork:
    """What one cache's cells need: its prepared rows and folds, the fold table and the keys' parts."""

    prepared: object  # probekit.probe.evaluate.Prepared
    path: str
    fingerprint: str
    task_hash: str
    task_def: dict
    y: np.ndarray
    table: np.ndarray
    layers: list[int]

    @property
    def n_inner(self) -> list[int]:
        return [int(self.table[k].max()) + 1 for k in range(self.table.shape[0])]

    def key(self, probe: str, layer: int, params: Mapping, fold: str) -> tuple:
        return cell_key(self.fingerprint, self.task_hash, layer, probe, params, fold)


def _cache_work(cache: EmbeddingCache, encoder: str, spec: SweepSpec) -> _CacheWork:
    """Rows, labels and outer folds as ``probe`` takes them (:func:`probekit.probe.evaluate.prepare`),
    plus the inner folds. The store key includes where the labels came from, so a relabelled manifest
    never reuses cells computed on the old labels."""
    try:
        prepared = prepare(cache, spec.task_spec(), spec.protocol(), manifest=spec.manifest, encoder=encoder)
        layers = prepared.layers(spec.layers)
    except ProbeInputError as exc:
        raise SweepError(str(exc)) from exc
    targets = prepared.targets
    y = targets.y.astype(np.int32 if len(targets.classes) > 255 else np.uint8)  # compact: shipped with every job
    task_def = {**spec.task_definition(), "labels_from": prepared.labels_from.get("sha256", "cache")}
    return _CacheWork(prepared, str(Path(cache.path).resolve()), cache.fingerprint, stable_hash(task_def), task_def, y,
                      fold_table(spec, prepared.groups, y, prepared.folds), layers)


def _run_phase(run: _Run, work: _CacheWork, wanted: dict[int, list[tuple[dict, str]]]) -> None:
    """Compute the cells of ``wanted`` (layer -> [(params, fold)]) that the store lacks, one job per layer."""
    spec, store, prepared = run.spec, run.store, work.prepared
    jobs = []
    for layer in work.layers:
        keyed = [((p, f), work.key(spec.probe, layer, p, f)) for p, f in wanted.get(layer, [])]
        missing = tuple(cell for cell, k in keyed if not store.has(k))
        run.found({k for _, k in keyed if store.has(k)}, f"{prepared.encoder} layer {layer}")
        if missing:
            jobs.append(LayerJob(work.path, layer, spec.task, spec.probe, prepared.rows, work.y,
                                 prepared.targets.classes, work.table, missing, prepared.groups))
    for i, results in run_jobs(run_layer_job, jobs, backend=run.backend, n_jobs=run.n_jobs, scheduler=run.scheduler):
        _record(run, work, jobs[i].layer, results)


def _record(run: _Run, work: _CacheWork, layer: int, results: list[tuple]) -> None:
    """Append computed cells ``[(params, fold, scores, n_test, confusion), ...]`` of ``layer`` to the store."""
    spec, prepared = run.spec, work.prepared
    for params, fold, scores, n_test, confusion in results:
        run.store.append([{
            "cache": work.fingerprint, "cache_path": work.path, "encoder": prepared.encoder,
            "task": work.task_hash, "task_spec": work.task_def, "layer": layer, "probe": spec.probe,
            "params": params, "fold": fold, "scores": scores, "n_test": n_test, "confusion": confusion,
        }])
        run.computed += 1
        run.counted.add(work.key(spec.probe, layer, params, fold))
    run.progress.advance(len(results), f"{prepared.encoder} layer {layer}")


def _select(run: _Run, work: _CacheWork, params_list: list[dict]) -> tuple[dict[int, list[dict]], dict[int, list[float]]]:
    """Per layer and outer fold, the candidate with the best mean inner score (inner cells only; ties and
    all-undefined: the first candidate), and that score."""
    metric, probe, K, n_inner = run.spec.headline(), run.spec.probe, work.table.shape[0], work.n_inner
    chosen: dict[int, list[dict]] = {}
    inner_best: dict[int, list[float]] = {}
    for la in work.layers:
        chosen[la], inner_best[la] = [], []
        for k in range(K):
            scores = [[run.store.get(work.key(probe, la, p, f"o{k}/i{j}"))["scores"][metric] for j in range(n_inner[k])]
                      for p in params_list]
            means = [fold_mean_std(v)[0] for v in scores]
            b = int(np.argmax(np.nan_to_num(means, nan=-np.inf)))
            chosen[la].append(params_list[b])
            inner_best[la].append(float(means[b]))
    return chosen, inner_best


def _refit(spec: SweepSpec, work: _CacheWork, chosen: dict[int, list[dict]]) -> tuple[dict[int, dict], OOFPredictions, dict[int, LayerOutcome]]:
    """Each layer's out-of-fold predictions at its outer folds' selected parameters, through the core
    ``probe`` uses (:func:`~probekit.probe.evaluate.evaluate_layer`): outer fold k gets a fresh probe
    with fold k's choice, fitted on fold k's training rows, the outer cell the store scored. The
    store keeps no per-row scores, so this is one more fit per outer fold and layer.

    Returns per layer the :func:`~probekit.probe.evaluate.layer_row` of those predictions (pooled
    values, speaker-bootstrap intervals, extras), the (encoder, probe)'s :class:`OOFPredictions` and the
    per-layer outcomes.
    """
    prepared = work.prepared
    outcomes, core_rows = {}, {}
    for la in work.layers:
        probes: dict[str, object] = {}
        for p in chosen[la]:  # one object per distinct choice: its folds are solved together
            probes.setdefault(params_key(p), make_probe(spec.probe, **p))
        outcomes[la] = evaluate_layer(prepared, read_X(prepared, la), [probes[params_key(p)] for p in chosen[la]])
        core_rows[la] = layer_row(prepared, la, spec.probe, outcomes[la], n_boot=spec.bootstrap)
    return core_rows, oof_predictions(prepared, spec.probe, outcomes), outcomes


def _outer_cells_from(run: _Run, work: _CacheWork, chosen: dict[int, list[dict]], outcomes: Mapping[int, LayerOutcome]) -> None:
    """Store each outer cell (fold ``o{k}`` at its chosen parameters) from the refit's predictions on its test
    rows: the same fit, scores and decisions (0.5, or the most probable class) that a separate cell would have."""
    prepared = work.prepared
    kind, classes, y = prepared.kind, prepared.targets.classes, prepared.targets.y
    for la in work.layers:
        results = []
        for k, (_train, test) in enumerate(prepared.folds):
            key = work.key(run.spec.probe, la, chosen[la][k], f"o{k}")
            if run.store.has(key):
                run.found({key}, f"{prepared.encoder} layer {la}")
                continue
            p = outcomes[la].proba[test]
            score = p[:, 0] if kind == "binary" else p
            results.append(cell_result(kind, classes, chosen[la][k], f"o{k}", y[test], outcomes[la].pred[test], score))
        if results:
            _record(run, work, la, results)


def _sweep_cache(run: _Run, work: _CacheWork, params_list: list[dict]) -> tuple[list[dict], OOFPredictions]:
    """All of one cache's cells, then its results rows (one per layer; :func:`outer_summary`) and
    out-of-fold predictions."""
    spec, K = run.spec, work.table.shape[0]
    # Phase 1: inner cells of every outer fold, for every candidate. logreg-fast also solves every
    # candidate's outer cells in the same batch: a second pass over the layer for the few chosen ones
    # cost more (reading the layer, its statistics and preconditioner again, at a narrow matrix width)
    # than the extra columns. Selection reads inner cells only.
    outer_too = spec.probe == "logreg-fast"
    _run_phase(run, work, {
        la: [(p, f"o{k}/i{j}") for k in range(K) for j in range(work.n_inner[k]) for p in params_list]
        + ([(p, f"o{k}") for k in range(K) for p in params_list] if outer_too else [])
        for la in work.layers
    })
    chosen, inner_best = _select(run, work, params_list)
    # Phase 2: each outer fold at its chosen parameters. logreg-fast solved every candidate's outer cells
    # in phase 1, so this only finds them; for other probes the refit that gives the out-of-fold
    # predictions is that very fit, so its test rows make the outer cells (no second fit).
    _run_phase(run, work, {la: [(chosen[la][k], f"o{k}") for k in range(K)] for la in work.layers} if spec.probe == "logreg-fast" else {})
    core_rows, oof, outcomes = _refit(spec, work, chosen)
    if spec.probe != "logreg-fast":
        _outer_cells_from(run, work, chosen, outcomes)
    rows = []
    for la in work.layers:
        outer = [run.store.get(work.key(spec.probe, la, chosen[la][k], f"o{k}")) for k in range(K)]
        core = core_rows[la]
        metrics = outer_summary(spec.task, outer, core)
        extras = {k: core[k] for k in ("confusion_matrix", "per_label") if k in core}
        counts = Counter(params_key(p) for p in chosen[la])
        best = next(p for p in chosen[la] if params_key(p) == counts.most_common(1)[0][0])
        rows.append({
            "encoder": work.prepared.encoder, "layer": la, "probe": spec.probe, "n_folds": K, "metrics": metrics, **extras,
            "best_params": best, "fold_params": chosen[la], "inner_score": fold_mean_std(inner_best[la])[0],
            "n_candidates": len(params_list),
        })
    return rows, oof


def run_sweep(
    caches: Sequence[str | Path],
    spec: SweepSpec,
    out: str | Path,
    *,
    backend: str = "local",
    n_jobs: int = 1,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Run (or resume) a nested-CV sweep of ``spec`` over ``caches``, recording cells in ``out/results.jsonl``.

    ``progress`` counts cells (computed or found in the store) of both phases."""
    out = Path(out)
    problems = spec.problems()
    if problems:
        raise SweepError("; ".join(problems))
    params_list = candidate_params(spec)  # every name a parameter of the probe: problems() said so
    opened = [EmbeddingCache(p) for p in caches]
    works = [_cache_work(c, name, spec) for c, name in zip(opened, encoder_names(opened))]
    for w in works[1:]:
        if w.prepared.targets.classes != works[0].prepared.targets.classes:
            # One document lists one set of classes, and confusion matrices are in its order.
            raise SweepError(f"{w.path} yields classes {w.prepared.targets.classes}, unlike {works[0].path} "
                             f"({works[0].prepared.targets.classes}); sweep them separately")
    store = ResultStore(out / "results.jsonl")
    for w in works:
        store.check_compatible({w.path: w.fingerprint}, w.task_hash)
    run = _Run(spec, store, backend, n_jobs, scheduler, progress or NoProgress())
    outer_too = spec.probe == "logreg-fast"
    run.progress.start(sum(len(w.layers) * (len(params_list) * (sum(w.n_inner) + (w.table.shape[0] if outer_too else 0)) + w.table.shape[0])
                           for w in works))
    rows: list[dict] = []
    oofs: list[OOFPredictions] = []
    try:
        for w in works:
            cache_rows, oof = _sweep_cache(run, w, params_list)
            rows += cache_rows
            oofs.append(oof)
    finally:
        store.close()
    return SweepResult(
        rows=rows, headline=spec.headline(), computed=run.computed, reused=run.reused, store=store.path, spec=spec,
        caches=[cache_entry(w.prepared) for w in works], classes=works[0].prepared.targets.classes if works else (), oof=oofs,
    )


# --------------------------------------------------------------------------- reporting


def sweep_document(result: SweepResult) -> dict:
    """The sweep's ``results.json`` (described in docs/sweep.md): ``probe``'s document
    (:func:`probekit.probe.evaluate.results_document`) of the sweep's rows, ranked by the mean over outer
    folds (``headline.aggregate`` ``"mean"``), plus a top-level ``sweep`` block; the tied sets, encoder
    comparison and calibration come from the out-of-fold predictions, as in ``probe``."""
    spec = result.spec
    config = {**asdict(spec), "caches": [c["path"] for c in result.caches]}
    block = {
        "cells_computed": result.computed, "cells_reused": result.reused, "store": str(result.store),
        "candidates": candidate_params(spec), "cv": spec.cv, "outer_folds": spec.outer_folds, "inner_folds": spec.inner_folds,
    }
    doc = results_document(spec.task_spec(), result.classes, "mean", config, spec.seed, result.caches, result.rows,
                           metric=result.headline, extra={"sweep": block})
    doc["seeds"]["bootstrap_seed"] = spec.seed if spec.bootstrap > 0 else None
    doc = annotate_results(doc, result.oof, n_boot=spec.bootstrap, seed=spec.seed)
    return annotate_calibration(doc, result.oof)


def write_outputs(result: SweepResult, out: str | Path) -> dict[str, Path]:
    """Write the sweep's output folder (:func:`probekit.report.outputs.write_sweep_outputs`) from
    :func:`sweep_document`, with the out-of-fold files ``oof/<encoder>__<probe>.npz`` (:mod:`probekit.oof`);
    the store ``results.jsonl`` beside it is kept. Returns file name -> path."""
    from probekit.report.outputs import write_sweep_outputs

    return write_sweep_outputs(sweep_document(result), Path(out), oof=result.oof)
