"""Hyperparameter sweeps over every layer with nested, speaker-grouped cross-validation.

For each cache, layer and outer fold ``k``, every candidate parameter set is scored on the INNER
speaker-grouped folds of outer fold ``k``'s training part only; the best mean inner score picks the
parameters, which are then refitted on the whole training part and scored once on outer test fold
``k``. The layer curve is the mean over outer folds of those outer scores, so choosing parameters
never sees a test fold.

Every computed cell (cache, task, layer, probe, params, fold) is one record in an append-only
:class:`~probekit.store.ResultStore`; a rerun computes only the cells that are missing, so an
interrupted sweep resumes and a widened grid computes only its new cells.

Work is cut into layer jobs (:class:`LayerJob`): one job reads one layer from the HDF5 file and
computes all of its missing cells; ``logreg-fast`` solves all of them as one batched problem.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import clone

from probekit.cache import EmbeddingCache
from probekit.distributed import run_jobs
from probekit.fastlogreg import decision_batched, fit_batched
from probekit.metrics import HEADLINE, LOWER_IS_BETTER, SCALAR_METRICS, compute_metrics
from probekit.probes import make_probe
from probekit.splits import make_folds
from probekit.store import ResultStore, cell_key, params_key, stable_hash
from probekit.tasks import ProbeInputError, Targets, TaskSpec, build_targets

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
    "load_sweep_file",
    "HEADLINE",
]

OUTER_TEST = -1
NOT_USED = -2


class SweepError(ValueError):
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

    def task_definition(self) -> dict:
        """Everything that defines the labels and the folds; its hash keys the store.

        ``definition`` versions how labels and folds are derived from these fields (2: labels from
        :func:`probekit.tasks.build_targets`, folds from :func:`probekit.splits.make_folds`), so a
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
    """The task's targets from row-aligned metadata, through :func:`probekit.tasks.build_targets`
    (the same labels ``probekit probe`` trains on); input errors become :class:`SweepError`."""
    try:
        return build_targets(TaskSpec(spec.task, spec.target, spec.positive, spec.labels, spec.min_support), metadata)
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
    Outer folds come from :func:`probekit.splits.make_folds` with ``spec.cv``; the inner folds of
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
    """The scalar metrics of one cell from :func:`probekit.metrics.compute_metrics` (the same names
    and definitions as ``probekit probe``); shapes as there. Lists (confusion matrix, per-label
    scores) are left out: a store record holds one number per metric."""
    scores = compute_metrics(kind, y_true, y_pred, y_score, classes)
    return {m: float(scores[m]) for m in SCALAR_METRICS[kind]}


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
    """A fresh (cloned) probe from :func:`probekit.probes.make_probe`; it standardises on its
    training rows and handles multi-label targets one-vs-rest itself."""
    return clone(make_probe(probe, **params))


def _generic_cells(X: np.ndarray, job: LayerJob) -> list[tuple[dict, str, dict, int]]:
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
        out.append((params, fold, cell_metrics(job.kind, y_true, pred, score, job.classes), len(te)))
    return out


def _fast_cells(X: np.ndarray, job: LayerJob) -> list[tuple[dict, str, dict, int]]:
    """All cells of the job as one batched solve: groups = (fold, C)."""
    folds = sorted({f for _, f in job.cells})
    fidx = {f: i for i, f in enumerate(folds)}
    masks = np.zeros((len(job.rows), len(folds)), dtype=bool)
    tests = {}
    for f in folds:
        tr, te = fold_rows(job.table, f)
        masks[tr, fidx[f]] = True
        tests[f] = te
    for params, _ in job.cells:
        extra = set(params) - {"C"}
        if extra:
            raise SweepError(f"logreg-fast takes only C; got {sorted(extra)}")
    gf = [fidx[f] for _, f in job.cells]
    gc = [float(p.get("C", 1.0)) for p, _ in job.cells]
    fit = fit_batched(X, indicator(Targets(job.y, job.classes, job.kind, np.ones(len(job.y), bool))), masks, gf, gc)
    out = []
    for g, (params, fold) in enumerate(job.cells):
        te = tests[fold]
        S = decision_batched(X[te], fit, [g])[:, 0, :]  # (n_test, k) decision values, threshold 0
        if job.kind == "binary":
            score, pred = S[:, 0], (S[:, 0] > 0).astype(np.int64)
        elif job.kind == "multiclass":
            score, pred = S, S.argmax(1)
        else:
            score, pred = S, (S > 0).astype(np.int64)
        out.append((params, fold, cell_metrics(job.kind, job.y[te], pred, score, job.classes), len(te)))
    return out


def run_layer_job(job: LayerJob) -> list[tuple[dict, str, dict, int]]:
    """Read the job's layer from the cache (float16 stays float16) and compute its cells.

    Returns ``[(params, fold, scores, n_test), ...]``. Runs in a worker: only this job's data.
    """
    cache = EmbeddingCache(job.cache_path)
    rows = None if len(job.rows) == cache.n_segments else job.rows
    X = cache.read_layer(job.layer, dtype=None, rows=rows)
    if job.probe == "logreg-fast":
        return _fast_cells(X, job)
    return _generic_cells(X, job)


# --------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    """What a sweep found.

    ``rows``: one dict per (cache, layer): encoder, layer, the headline metric's mean and std over
    outer folds at the selected parameters, ``best_params`` (most often selected), ``fold_params``.
    ``computed`` / ``reused``: cells computed in this run / found in the store.
    """

    rows: list[dict]
    headline: str
    computed: int
    reused: int
    store: Path
    spec: SweepSpec
    caches: dict[str, str] = field(default_factory=dict)


def _finite_mean(values) -> float:
    """Mean over the defined values (e.g. ROC-AUC is undefined on a one-class test speaker); NaN if none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


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
    try:
        for cache in opened:
            cpath = str(Path(cache.path).resolve())
            fp = cache.fingerprint
            targets = sweep_targets(spec, cache.metadata)
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

            def key(layer, params, fold):
                return cell_key(fp, task_hash, layer, spec.probe, params, fold)

            def run_phase(wanted: dict[int, list[tuple[dict, str]]]) -> None:
                nonlocal computed, reused
                jobs = []
                for layer in layers:
                    cells = wanted.get(layer, [])
                    missing = tuple((p, f) for p, f in cells if not store.has(key(layer, p, f)))
                    reused += len(cells) - len(missing)
                    if missing:
                        jobs.append(LayerJob(cpath, layer, spec.task, spec.probe, used, y, targets.classes, table, missing))
                for i, results in run_jobs(run_layer_job, jobs, backend=backend, n_jobs=n_jobs, scheduler=scheduler):
                    job = jobs[i]
                    for params, fold, scores, n_test in results:
                        store.append([{
                            "cache": fp, "cache_path": cpath, "encoder": cache.encoder or Path(cpath).stem,
                            "task": task_hash, "task_spec": task_def, "layer": job.layer, "probe": spec.probe,
                            "params": params, "fold": fold, "scores": scores, "n_test": n_test,
                        }])
                        computed += 1
                    if progress:
                        progress(f"{Path(cpath).name} layer {job.layer}: {len(results)} cell(s)")

            # Phase 1: inner cells of every outer fold, for every candidate.
            run_phase({la: [(p, f"o{k}/i{j}") for k in range(K) for j in range(n_inner[k]) for p in params_list] for la in layers})
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
                outer = [store.get(key(la, chosen[la][k], f"o{k}"))["scores"] for k in range(K)]
                vals = np.array([s[spec.headline()] for s in outer])
                counts = Counter(params_key(p) for p in chosen[la])
                best = next(p for p in chosen[la] if params_key(p) == counts.most_common(1)[0][0])
                row = {
                    "encoder": cache.encoder or Path(cpath).stem,
                    "cache": cpath,
                    "cache_fingerprint": fp,
                    "layer": la,
                    "probe": spec.probe,
                    spec.headline(): _finite_mean(vals),
                    f"{spec.headline()}_std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "n_folds": K,
                    "best_params": best,
                    "fold_params": chosen[la],
                    "inner_score": _finite_mean(inner_best[la]),
                    "n_candidates": len(params_list),
                    "classes": list(targets.classes),
                }
                for m in SCALAR_METRICS[spec.task]:
                    if m != spec.headline():
                        row[m] = _finite_mean([s[m] for s in outer])
                rows.append(row)
    finally:
        store.close()
    return SweepResult(rows=rows, headline=spec.headline(), computed=computed, reused=reused, store=store.path, spec=spec, caches=fps)


# --------------------------------------------------------------------------- reporting


def write_outputs(result: SweepResult, out: str | Path) -> dict[str, Path]:
    """``results.json`` (probe's row-per-(encoder, layer, probe) shape plus sweep columns),
    ``sweep_layers.csv`` and ``layer_curve.png`` in ``out``."""
    import csv
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probekit import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    h = result.headline
    best: dict[str, dict] = {}
    for r in result.rows:
        if r["encoder"] not in best or r[h] > best[r["encoder"]][h]:
            best[r["encoder"]] = r
    doc = {
        "schema": "probekit.results",
        "schema_version": 1,
        "kind": "sweep",
        "probekit_version": __version__,
        "headline_metric": h,
        "config": {**asdict(result.spec), "candidates": candidate_params(result.spec)},
        "caches": result.caches,
        "rows": result.rows,
        "best": [{"encoder": e, "probe": r["probe"], "layer": r["layer"], h: r[h], "best_params": r["best_params"]} for e, r in best.items()],
        "sweep": {"cells_computed": result.computed, "cells_reused": result.reused, "store": str(result.store)},
    }
    paths = {"json": out / "results.json", "csv": out / "sweep_layers.csv", "png": out / "layer_curve.png"}
    paths["json"].write_text(json.dumps(doc, indent=2, sort_keys=True, default=float) + "\n", encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["encoder", "layer", "probe", h, f"{h}_std", "best_params", "inner_score"])
        for r in result.rows:
            w.writerow([r["encoder"], r["layer"], r["probe"], f"{r[h]:.4f}", f"{r[h + '_std']:.4f}", params_key(r["best_params"]), f"{r['inner_score']:.4f}"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for enc in dict.fromkeys(r["encoder"] for r in result.rows):
        rs = [r for r in result.rows if r["encoder"] == enc]
        x = np.array([r["layer"] for r in rs])
        y = np.array([r[h] for r in rs])
        s = np.array([r[h + "_std"] for r in rs])
        ax.plot(x, y, marker="o", label=f"{enc} ({result.spec.probe}, tuned)")
        ax.fill_between(x, y - s, y + s, alpha=0.2)
    ax.set_xlabel("hidden state")
    ax.set_ylabel(f"{h} (outer folds, nested CV)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=120)
    plt.close(fig)
    return paths
