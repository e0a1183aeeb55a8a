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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from probekit.cache import EmbeddingCache
from probekit.probe.distributed import run_jobs
from probekit.probe.fastlogreg import decision_batched, fit_batched, preconditioner, to_float32
from probekit.probe.metrics import HEADLINE, LOWER_IS_BETTER, SCALAR_METRICS, confusion_counts, confusion_metrics, resampled_point
from probekit.probe.probes import make_probe
from probekit.probe.probing import best_rows, fold_mean_std, pooled_extras, software_versions
from probekit.results import SCHEMA_VERSION, load_results, now_iso, write_csv, write_results
from probekit.probe.splits import make_folds
from probekit.probe.store import ResultStore, cell_key, params_key, stable_hash
from probekit.probe.tasks import ProbeInputError, Targets, TaskSpec, build_targets

__all__ = [
    "SweepError",
    "SweepSpec",
    "SweepResult",
    "LayerJob",
    "parse_grid",
    "parse_range",
    "candidate_params",
    "run_layer_job",
    "run_sweep",
    "sweep_document",
    "write_outputs",
    "load_sweep_file",
    "HEADLINE",
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

    def headline(self) -> str:
        return self.metric or HEADLINE[self.task]

    def task_spec(self) -> TaskSpec:
        """The labels this sweep trains on, as ``probekit probe`` defines them."""
        return TaskSpec(self.task, self.target, self.positive, self.labels, self.min_support)

    def task_definition(self) -> dict:
        """Everything that defines the labels and the folds; its hash keys the store.

        ``definition`` versions how labels and folds are derived from these fields (2: labels from
        :func:`probekit.probe.tasks.build_targets`, folds from :func:`probekit.probe.splits.make_folds`), so a
        store written under another derivation is refused rather than mixed."""
        return {
            "definition": 2,
            "task": self.task,
            "target": self.target,
            "positive": self.positive,
            "labels": list(self.labels) if self.labels else None,
            "min_support": self.min_support,
            "cv": self.cv,
            "outer_folds": self.outer_folds,
            "inner_folds": self.inner_folds,
            "seed": self.seed,
        }


def _value(text: str):
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_grid(items: Sequence[str]) -> tuple[tuple[str, tuple], ...]:
    """``["C=0.01,0.1,1"]`` -> ``(("C", (0.01, 0.1, 1)),)``."""
    out = []
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise SweepError(f"--grid {item!r}: write NAME=V1,V2,... e.g. C=0.01,0.1,1,10")
        vals = tuple(_value(v) for v in values.split(",") if v.strip())
        out.append((name.strip(), vals))
    return tuple(out)


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
    if spec.trials > 0:
        if not spec.ranges:
            raise SweepError("--trials needs at least one --range NAME=LOW:HIGH[:log]")
        rng = np.random.default_rng(spec.seed)
        fixed = [dict(zip([n for n, _ in spec.grid], combo)) for combo in itertools.product(*[v for _, v in spec.grid])] or [{}]
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
    if not spec.grid:
        return [{}]
    names = [n for n, _ in spec.grid]
    return [dict(zip(names, combo)) for combo in itertools.product(*[v for _, v in spec.grid])]


def load_sweep_file(path: str | Path) -> dict:
    """Read a TOML sweep file (``recipes/sweeps/*.toml``) into keyword arguments of :class:`SweepSpec`
    plus ``caches`` and ``out``. Unknown keys are an error, so a typo fails now, not after an hour."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SweepError(f"{path}: cannot read sweep file ({exc})") from exc
    allowed = set(SweepSpec.__dataclass_fields__) | {"caches", "out", "jobs", "backend", "scheduler"}
    unknown = sorted(set(data) - allowed - {"grid", "range"})
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(allowed | {'grid', 'range'})}")
    kw = {k: v for k, v in data.items() if k not in ("grid", "range")}
    if "grid" in data:
        kw["grid"] = tuple((str(k), tuple(v if isinstance(v, list) else [v])) for k, v in data["grid"].items())
    if "range" in data:
        kw["ranges"] = parse_range([f"{k}={v}" for k, v in data["range"].items()])
    for key in ("labels", "layers"):
        if key in kw and kw[key] is not None:
            kw[key] = tuple(kw[key])
    if "task" not in kw or "target" not in kw:
        raise SweepError(f"{path}: a sweep file needs at least `task` and `target`")
    return kw


# --------------------------------------------------------------------------- labels and folds


def sweep_targets(spec: SweepSpec, metadata: Mapping[str, np.ndarray]) -> Targets:
    """The task's targets from row-aligned metadata, through :func:`probekit.probe.tasks.build_targets`
    (the same labels ``probekit probe`` trains on); input errors become :class:`SweepError`."""
    try:
        return build_targets(spec.task_spec(), metadata)
    except ProbeInputError as exc:
        raise SweepError(str(exc)) from exc


def indicator(targets: Targets) -> np.ndarray:
    """``(n, k)`` uint8 0/1 columns for the batched solver: binary one column (the positive class),
    multiclass one-hot over ``targets.classes``, multilabel the label indicator itself."""
    if targets.kind == "binary":
        return targets.y.astype(np.uint8)[:, None]
    if targets.kind == "multiclass":
        return np.eye(len(targets.classes), dtype=np.uint8)[targets.y]
    return targets.y.astype(np.uint8)


def fold_table(spec: SweepSpec, groups: np.ndarray, y: np.ndarray, split: np.ndarray | None = None) -> np.ndarray:
    """``(K, n)`` int8: for outer fold k, row i is ``-1`` (outer test), its inner fold index, or
    ``-2`` (not used, e.g. a split value other than train/test).

    ``y``: ``Targets.y`` (``(n,)`` classes or ``(n, k)`` indicator), used for stratification.
    Outer folds come from :func:`probekit.probe.splits.make_folds` with ``spec.cv``; the inner folds of
    outer fold k are speaker-grouped folds of outer fold k's training rows only.
    """
    groups = np.asarray(groups).astype(str)
    try:
        outer = make_folds(spec.cv, groups, y, spec.outer_folds, spec.seed, split)
    except ProbeInputError as exc:
        raise SweepError(f"outer folds: {exc}") from exc
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
    """The scalar metrics of one cell, with the same names and definitions as ``probekit probe``;
    shapes as in :func:`probekit.probe.metrics.compute_metrics`. Lists (confusion matrix, per-label
    scores) are left out: a record's ``scores`` hold one number per metric.

    Computed by the vectorised metrics (:func:`probekit.probe.metrics.resampled_point`, tested equal to
    scikit-learn's) rather than ``compute_metrics``: scikit-learn's input checks cost about 40 ms per
    cell, which at 5,000 segments was more than the batched fit of the cell itself.
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


def _make_estimator(probe: str, params: Mapping[str, object]):
    """A fresh (cloned) probe from :func:`probekit.probe.probes.make_probe`; it standardises on its
    training rows and handles multi-label targets one-vs-rest itself."""
    return clone(make_probe(probe, **params))


def _cell_result(job: LayerJob, params: dict, fold: str, y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray) -> tuple:
    """``(params, fold, scores, n_test, confusion)`` of one cell. ``confusion``
    (:func:`probekit.probe.metrics.confusion_counts`) only for an outer cell (fold ``o{k}``), else ``None``:
    summed over outer folds it gives the results document's pooled values, confusion matrix and
    per-label scores; inner cells only select parameters."""
    confusion = confusion_counts(job.kind, y_true, y_pred, len(job.classes)) if "/" not in fold else None
    return params, fold, cell_metrics(job.kind, y_true, y_pred, y_score, job.classes), len(y_true), confusion


def _generic_cells(X: np.ndarray, job: LayerJob) -> list[tuple]:
    out = []
    for params, fold in job.cells:
        tr, te = fold_rows(job.table, fold)
        est = _make_estimator(job.probe, params).fit(X[tr].astype(np.float32), job.y[tr])
        proba = np.asarray(est.predict_proba(X[te].astype(np.float32)))
        y_true = job.y[te]
        if job.kind == "multilabel":
            score, pred = proba, (proba >= 0.5).astype(np.int64)
        else:
            # Columns of predict_proba follow est.classes_: spread them over every class index.
            full = np.zeros((len(te), len(job.classes)))
            full[:, np.asarray(est.classes_, dtype=int)] = proba
            if job.kind == "binary":
                score = full[:, 1]
                pred = (score >= 0.5).astype(np.int64)
            else:
                score, pred = full, full.argmax(1)
        out.append(_cell_result(job, params, fold, y_true, pred, score))
    return out


def _fast_cells(X: torch.Tensor, job: LayerJob) -> list[tuple]:
    """All cells of the job as batched solves: groups = (fold, C). ``X``: ``(n, d)`` float32.

    When each outer fold brings enough problems (cells x labels) to keep the products wide, the
    cells of outer fold k (its inner folds and itself) are solved on outer fold k's training rows
    only: no problem of theirs trains on the outer test rows, so carrying them through every
    product and elementwise pass was a fifth of the work for nothing. Narrow jobs (e.g. binary)
    stay one solve, where width matters more. One preconditioner serves all of the layer's solves.
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
        out.append(_cell_result(job, params, fold, job.y[te], pred, score))
    return out


def run_layer_job(job: LayerJob) -> list[tuple]:
    """Read the job's layer from the cache (float16 stays float16) and compute its cells.

    Returns ``[(params, fold, scores, n_test, confusion), ...]`` (see :func:`_cell_result`). Runs in
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
    """What a sweep found.

    ``rows``: one row per (cache, layer) in the :mod:`probekit.results` schema (``encoder``,
    ``layer``, ``probe``, ``n_folds``, ``metrics`` and ``confusion_matrix`` / ``per_label`` from
    :func:`outer_summary`), plus the sweep columns ``best_params`` (most often selected),
    ``fold_params`` (selected per outer fold), ``inner_score`` (mean over outer folds of the
    selected candidate's mean inner score) and ``n_candidates``.
    ``caches``: the document's cache entries; ``classes``: the task's classes (the same for every cache).
    ``computed`` / ``reused``: cells computed in this run / found in the store.
    """

    rows: list[dict]
    headline: str
    computed: int
    reused: int
    store: Path
    spec: SweepSpec
    caches: list[dict] = field(default_factory=list)
    classes: tuple[str, ...] = ()

    @property
    def best(self) -> list[dict]:
        """Per (encoder, probe): the layer with the best headline mean over outer folds (the layer curve's peak)."""
        return best_rows(self.rows, self.headline, "mean")


def _finite_mean(values) -> float:
    """Mean over the defined values (e.g. ROC-AUC is undefined on a one-class test speaker); NaN if none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


# Means over test rows: pooled over the outer test folds, they are the n_test-weighted mean of the folds' values.
_ROW_MEANS = ("subset_accuracy", "lrap")


def outer_summary(kind: str, classes: Sequence[str], outer: Sequence[Mapping]) -> tuple[dict, dict]:
    """``metrics`` and ``confusion_matrix`` / ``per_label`` of one layer's results row, from the store
    records of its outer cells at the selected parameters (one per outer fold: ``scores``, ``n_test``,
    ``confusion``).

    Per metric, the stat keys of :data:`probekit.results.STAT_KEYS` with ``probe``'s meanings:
    ``mean``/``std`` over the outer folds' scores (ddof=0, defined folds only); ``value`` pooled over
    all outer test rows, from the summed confusion counts (:func:`probekit.probe.metrics.confusion_metrics`)
    or, for subset accuracy and LRAP, the n_test-weighted mean. ``None`` where the records cannot give
    a number: ``value`` of ROC-AUC and PR-AUC (they rank every out-of-fold score, which the store does
    not keep), ``ci_low``/``ci_high`` (the speaker bootstrap resamples per-row predictions), and the
    count-based values and lists when a record comes from a store written before outer cells kept counts.
    """
    counts = [rec.get("confusion") for rec in outer]
    if all(c is not None for c in counts):
        pooled = confusion_metrics(kind, np.sum(counts, axis=0))
        extras = pooled_extras(kind, classes, pooled)
    else:
        pooled = {}
        extras = {"multiclass": {"confusion_matrix": None}, "multilabel": {"per_label": None}}.get(kind, {})
    n_test = np.array([rec["n_test"] for rec in outer], dtype=float)
    for name in _ROW_MEANS:
        if name in SCALAR_METRICS[kind]:
            pooled[name] = float(np.dot([rec["scores"][name] for rec in outer], n_test) / n_test.sum())
    metrics = {}
    for name in SCALAR_METRICS[kind]:
        mean, std = fold_mean_std([rec["scores"][name] for rec in outer])
        metrics[name] = {"value": pooled.get(name), "mean": mean, "std": std, "ci_low": None, "ci_high": None}
    return metrics, extras


def _cache_entry(cache: EmbeddingCache, encoder: str, used: np.ndarray, groups: np.ndarray, n_folds: int) -> dict:
    """The results document's ``caches`` entry of one swept cache."""
    return {
        "encoder": encoder,
        "path": str(Path(cache.path).resolve()),
        "fingerprint": cache.fingerprint,
        "num_layers": cache.num_layers,
        "dim": cache.dim,
        "dtype": str(cache.dtype),
        "n_rows": len(cache),
        "n_rows_used": len(used),
        "n_speakers": len(np.unique(groups)),
        "n_folds": n_folds,
        # A sweep reads the cache's own metadata and joins no manifest, so no row can be missing from one.
        "missing_from_manifest": {"count": 0, "ids": []},
    }


def _check_spec(spec: SweepSpec) -> None:
    if spec.task not in SCALAR_METRICS:
        raise SweepError(f"unknown task {spec.task!r}: use binary, multiclass or multilabel")
    h = spec.headline()
    if h not in SCALAR_METRICS[spec.task] or h in LOWER_IS_BETTER:
        ok = [m for m in SCALAR_METRICS[spec.task] if m not in LOWER_IS_BETTER]
        raise SweepError(f"metric {h!r} cannot select parameters for a {spec.task} task; use one of {', '.join(ok)}")


def run_sweep(
    caches: Sequence[str | Path],
    spec: SweepSpec,
    out: str | Path,
    *,
    backend: str = "local",
    n_jobs: int = 1,
    scheduler: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run (or resume) a nested-CV sweep of ``spec`` over ``caches``, recording cells in ``out/results.jsonl``."""
    out = Path(out)
    _check_spec(spec)
    params_list = candidate_params(spec)
    if spec.probe != "logreg-fast":
        for p in params_list:  # fail now, not inside a worker an hour in
            try:
                make_probe(spec.probe, **p)
            except ProbeInputError as exc:
                raise SweepError(str(exc)) from exc
    task_def = spec.task_definition()
    task_hash = stable_hash(task_def)
    opened = []
    for p in caches:
        c = EmbeddingCache(p)
        opened.append(c)
    fps = {str(Path(c.path).resolve()): c.fingerprint for c in opened}
    store = ResultStore(out / "results.jsonl")
    store.check_compatible(fps, task_hash)
    computed = reused = 0
    rows: list[dict] = []
    cache_entries: list[dict] = []
    classes: tuple[str, ...] | None = None
    try:
        for cache in opened:
            cpath = str(Path(cache.path).resolve())
            fp = cache.fingerprint
            # Rows and `best` are keyed by encoder: two caches of one encoder get their file names appended, as in `probe`.
            encoder = cache.encoder or Path(cpath).stem
            if any(e["encoder"] == encoder for e in cache_entries):
                encoder = f"{encoder} ({Path(cpath).stem})"
            targets = sweep_targets(spec, cache.metadata)
            if classes is not None and targets.classes != classes:
                # One document lists one set of classes, and confusion matrices are in its order.
                raise SweepError(f"{cache.path} yields classes {targets.classes}, unlike the caches before it ({classes}); sweep them separately")
            classes = targets.classes
            used = np.flatnonzero(targets.mask)
            y = targets.y.astype(np.int32 if len(targets.classes) > 255 else np.uint8)  # compact: shipped with every job
            if "speaker" not in cache.metadata:
                raise SweepError(f"{cache.path}: no 'speaker' column; nested speaker-grouped CV needs one")
            groups = np.asarray(cache.metadata["speaker"])[used]
            split = cache.metadata.get("split")
            table = fold_table(spec, groups, y, None if split is None else np.asarray(split)[used])
            layers = list(spec.layers) if spec.layers is not None else list(range(cache.num_layers))
            bad = [la for la in layers if not 0 <= la < cache.num_layers]
            if bad:
                raise SweepError(f"--layers {bad} out of range: {cache.path} has hidden states 0..{cache.num_layers - 1}")
            K = table.shape[0]
            n_inner = [int(table[k].max()) + 1 for k in range(K)]
            cache_entries.append(_cache_entry(cache, encoder, used, groups, K))

            def key(layer, params, fold):
                return cell_key(fp, task_hash, layer, spec.probe, params, fold)

            counted: set = set()  # cells already counted as computed or reused in this run

            def run_phase(wanted: dict[int, list[tuple[dict, str]]]) -> None:
                nonlocal computed, reused
                jobs = []
                for layer in layers:
                    keyed = [((p, f), key(layer, p, f)) for p, f in wanted.get(layer, [])]
                    missing = tuple(cell for cell, k in keyed if not store.has(k))
                    found = {k for _, k in keyed if store.has(k)} - counted
                    reused += len(found)
                    counted.update(found)
                    if missing:
                        jobs.append(LayerJob(cpath, layer, spec.task, spec.probe, used, y, targets.classes, table, missing))
                for i, results in run_jobs(run_layer_job, jobs, backend=backend, n_jobs=n_jobs, scheduler=scheduler):
                    job = jobs[i]
                    for params, fold, scores, n_test, confusion in results:
                        store.append([{
                            "cache": fp, "cache_path": cpath, "encoder": encoder,
                            "task": task_hash, "task_spec": task_def, "layer": job.layer, "probe": spec.probe,
                            "params": params, "fold": fold, "scores": scores, "n_test": n_test, "confusion": confusion,
                        }])
                        computed += 1
                        counted.add(key(job.layer, params, fold))
                    if progress:
                        progress(f"{Path(cpath).name} layer {job.layer}: {len(results)} cell(s)")

            # Phase 1: inner cells of every outer fold, for every candidate. logreg-fast also solves
            # every candidate's outer cells in the same batch: a second pass over the layer for the
            # few chosen ones cost more (reading the layer, its statistics and preconditioner again,
            # at a narrow matrix width) than the extra columns. Selection below reads inner cells only.
            outer_too = spec.probe == "logreg-fast"
            run_phase({
                la: [(p, f"o{k}/i{j}") for k in range(K) for j in range(n_inner[k]) for p in params_list]
                + ([(p, f"o{k}") for k in range(K) for p in params_list] if outer_too else [])
                for la in layers
            })
            # Selection from inner records only; then Phase 2: each outer fold at its chosen params.
            chosen: dict[int, list[dict]] = {}
            inner_best: dict[int, list[float]] = {}
            for la in layers:
                chosen[la], inner_best[la] = [], []
                for k in range(K):
                    means = [_finite_mean([store.get(key(la, p, f"o{k}/i{j}"))["scores"][spec.headline()] for j in range(n_inner[k])]) for p in params_list]
                    b = int(np.argmax(np.nan_to_num(means, nan=-np.inf)))  # ties and all-undefined: the first candidate
                    chosen[la].append(params_list[b])
                    inner_best[la].append(float(means[b]))
            run_phase({la: [(chosen[la][k], f"o{k}") for k in range(K)] for la in layers})
            for la in layers:
                metrics, extras = outer_summary(spec.task, targets.classes, [store.get(key(la, chosen[la][k], f"o{k}")) for k in range(K)])
                counts = Counter(params_key(p) for p in chosen[la])
                best = next(p for p in chosen[la] if params_key(p) == counts.most_common(1)[0][0])
                rows.append({
                    "encoder": encoder,
                    "layer": la,
                    "probe": spec.probe,
                    "n_folds": K,
                    "metrics": metrics,
                    **extras,
                    "best_params": best,
                    "fold_params": chosen[la],
                    "inner_score": _finite_mean(inner_best[la]),
                    "n_candidates": len(params_list),
                })
    finally:
        store.close()
    return SweepResult(
        rows=rows, headline=spec.headline(), computed=computed, reused=reused, store=store.path, spec=spec,
        caches=cache_entries, classes=classes or (),
    )


# --------------------------------------------------------------------------- reporting


def sweep_document(result: SweepResult) -> dict:
    """The sweep's ``results.json``: the :mod:`probekit.results` schema that ``probe`` writes, its rows
    extended with the sweep columns (see :class:`SweepResult`), plus a top-level ``sweep`` block:
    ``cells_computed``, ``cells_reused``, ``store`` (the results.jsonl path), ``candidates`` (the
    parameter sets tried, in selection order) and the nested-CV protocol (``cv``, ``outer_folds``,
    ``inner_folds``).

    ``headline.aggregate`` is ``"mean"``: a sweep ranks layers by the mean over outer folds (its layer
    curve), so ``best[].value`` is that mean. ``config`` is the :class:`SweepSpec` plus the cache paths;
    ``seeds.bootstrap_seed`` is ``None``: a sweep draws no bootstrap.
    """
    spec = result.spec
    return {
        "schema_version": SCHEMA_VERSION,
        "created": now_iso(),
        "task": {**asdict(spec.task_spec()), "classes": list(result.classes)},
        "headline": {"metric": result.headline, "aggregate": "mean"},
        "config": {**asdict(spec), "caches": [c["path"] for c in result.caches]},
        "seeds": {"seed": spec.seed, "bootstrap_seed": None, "fold_seed": spec.seed},
        "versions": software_versions(),
        "caches": result.caches,
        "rows": result.rows,
        "best": result.best,
        "sweep": {
            "cells_computed": result.computed,
            "cells_reused": result.reused,
            "store": str(result.store),
            "candidates": candidate_params(spec),
            "cv": spec.cv,
            "outer_folds": spec.outer_folds,
            "inner_folds": spec.inner_folds,
        },
    }


def _num(x, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _write_layer_csv(doc: dict, path: Path) -> Path:
    """``sweep_layers.csv``: per row the headline mean and std over outer folds, the most often
    selected parameters and the inner score; an undefined number is an empty field."""
    import csv

    h = doc["headline"]["metric"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["encoder", "layer", "probe", h, f"{h}_std", "best_params", "inner_score"])
        for r in doc["rows"]:
            s = r["metrics"][h]
            w.writerow([r["encoder"], r["layer"], r["probe"], _num(s["mean"]), _num(s["std"]), params_key(r["best_params"]), _num(r["inner_score"])])
    return path


def _plot_layer_curve(doc: dict, path: Path) -> Path:
    """``layer_curve.png``: headline mean over outer folds per layer, a ±std band, one line per (encoder, probe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = doc["headline"]["metric"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for enc, probe in dict.fromkeys((r["encoder"], r["probe"]) for r in doc["rows"]):
        rs = [r for r in doc["rows"] if (r["encoder"], r["probe"]) == (enc, probe)]
        x = np.array([r["layer"] for r in rs])
        y = np.array([r["metrics"][h]["mean"] for r in rs], dtype=float)  # None (undefined) -> NaN: a gap
        s = np.array([r["metrics"][h]["std"] for r in rs], dtype=float)
        # A local checkpoint's encoder id is its full path: its folder name reads better.
        name = Path(enc).name if Path(enc).is_absolute() else enc
        ax.plot(x, y, marker="o", label=f"{name} ({probe}, tuned)")
        ax.fill_between(x, y - s, y + s, alpha=0.2)
    ax.set_xlabel("hidden state (layer)")
    ax.set_ylabel(f"{h} (outer folds, nested CV, mean ± std)")
    layers = sorted({r["layer"] for r in doc["rows"]})
    if len(layers) <= 30:  # whole-number ticks: a hidden state 1.5 does not exist
        ax.set_xticks(layers)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: SweepResult, out: str | Path) -> dict[str, Path]:
    """Write into ``out``: ``results.json`` (:func:`sweep_document`, validated on write),
    ``results.csv`` (``probe``'s one line per row with every metric's stats), ``sweep_layers.csv`` and
    ``layer_curve.png``. Returns file name -> path.

    ``probe``'s ``report.md`` and plots are not written: they present pooled values with
    speaker-bootstrap intervals and ``probe``'s protocol, which a sweep's document does not carry.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"results.json": write_results(sweep_document(result), out / "results.json")}
    # The other files are drawn from the file as written (NaN already null), so they show what it holds.
    doc = load_results(files["results.json"])
    files["results.csv"] = write_csv(doc, out / "results.csv")
    files["sweep_layers.csv"] = _write_layer_csv(doc, out / "sweep_layers.csv")
    files["layer_curve.png"] = _plot_layer_curve(doc, out / "layer_curve.png")
    return files
