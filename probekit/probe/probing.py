"""Layer-wise probing: for each cache, layer and probe, cross-validate and score.

``run_probe(ProbeConfig) -> ProbeResults`` is the one entry point the CLI, recipes and the Python API
call; it runs the steps of :mod:`probekit.probe.evaluate` and writes the output folder.

``jobs > 1`` spreads (layer, probes) units over worker processes; each worker reads only its unit's
layer from the HDF5 file, so the cache is never copied per worker, and computes the unit's results rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from probekit.cache import EmbeddingCache
from probekit.choices import ClassWeight
from probekit.probe.evaluate import (
    EvalProtocol,
    LayerOutcome,
    Prepared,
    cache_entry,
    encoder_names,
    evaluate_layer,
    layer_row,
    oof_predictions,
    prepare,
    read_X,
    results_document,
)
from probekit.oof import ALL_LAYERS, OOFPredictions
from probekit.probe.calibration import METHODS, annotate_calibration
from probekit.probe.compare import annotate_results
from probekit.probe.params import resolve_params
from probekit.probe.probes import make_probe, probe_params, shared_projections
from probekit.probe.tasks import ProbeInputError, TaskSpec
from probekit.progress import NoProgress, Progress

# The headline metric's "value" is pooled over all out-of-fold predictions; see docs/probe.md
# for the measurement on EmoDB that decided it.
HEADLINE_AGGREGATE = "value"


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe and how.

    ``caches``: cache file paths (one per encoder); ``task``: the target;
    ``probes``: names from :data:`probekit.probe.probes.PROBES`; ``exact``: use the reference
    scikit-learn estimators instead of the fast paths;
    ``params``: ``(("C", 0.1), ("mlp.hidden", 128))``: a bare name applies to every probe that takes it;
    ``layers``: hidden-state indices (``None`` = all); ``cv``: ``speaker-kfold`` | ``loso`` | ``split``;
    ``folds``: K for speaker-kfold; ``jobs``: layers evaluated in parallel worker processes;
    ``manifest``: labelling manifest joined by id (default: the manifest the cache was extracted from,
    when it still lists the same audio); ``out``: output folder (``None`` = write nothing);
    ``bootstrap``: speaker resamples for the 95% CIs (0 = none); ``calibrate``: ``None``, ``"temperature"``
    or ``"isotonic"``, fitted per outer fold on inner speaker folds (binary and multilabel).
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
    calibrate: str | None = None
    bootstrap: int = 1000
    speaker_column: str = "speaker"
    exact: bool = False

    def protocol(self) -> EvalProtocol:
        return EvalProtocol(cv=str(self.cv), folds=self.folds, seed=self.seed, speaker_column=self.speaker_column)


@dataclass(frozen=True)
class ProbeResults:
    """``document``: the results.json content (see :mod:`probekit.results`); ``files``: what was written;
    ``oof``: the out-of-fold predictions per (encoder, probe)."""

    document: dict
    files: dict[str, Path] = field(default_factory=dict)
    oof: dict[tuple[str, str], OOFPredictions] = field(default_factory=dict)

    @property
    def rows(self) -> list[dict]:
        return self.document["rows"]

    @property
    def best(self) -> list[dict]:
        return self.document["best"]


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


def _takes_all_layers(name: str, params: dict, exact: bool) -> bool:
    return getattr(make_probe(name, exact=exact, **params), "input_layers", None) == "all"


def _layer_job(prepared: Prepared, layer: int, probes: tuple[str, ...], params: dict, exact: bool, tune: bool,
               calibrate: str | None, n_boot: int) -> list[tuple[str, LayerOutcome, dict]]:
    """Every probe of ``probes`` on one layer (``ALL_LAYERS``: probes over every hidden state), with its
    results row. Runs in a worker: it reads its layer from the file itself, and the row's metrics and
    speaker bootstrap are computed there too, beside the other worker's fits, not after them."""
    X = read_X(prepared, layer, all_layers=layer == ALL_LAYERS)
    out = []
    with shared_projections():  # the probes of the unit fit each fold's PCA once between them
        for name in probes:
            outcome = evaluate_layer(prepared, X, make_probe(name, exact=exact, **params[name]), tune=tune, calibrate=calibrate)
            row = layer_row(prepared, layer, name, outcome, n_boot=n_boot)
            if layer == ALL_LAYERS:
                row.update(_layer_weights(outcome))
            out.append((name, outcome, row))
    return out


# Probes that usually take longest on a layer (measured on the hotline workload: lgbm, then mlp, then
# logreg). Their units are handed out first, so short units fill the end of a parallel run instead of
# one long unit running alone on one core while the other worker idles.
_LONGEST_FIRST = ("layer-weights", "lgbm", "mlp")


def _work(plans, config, params) -> list[tuple[int, int, tuple[str, ...]]]:
    """(plan index, layer, probes) units: per selected layer, one for the probes that project each fold's
    training part by PCA (``pca_dims``: they share the projection) and one for each other probe; one per
    cache for the all-layer probes. The probes of :data:`_LONGEST_FIRST` go first. The units and their
    order change only which worker fits what and when, never a number."""
    single = tuple(p for p in config.probes if not _takes_all_layers(p, params[p], config.exact))
    whole = tuple(p for p in config.probes if p not in single)
    projected = tuple(p for p in single if "pca_dims" in probe_params(p, exact=config.exact))
    groups = ([projected] if projected else []) + [(p,) for p in single if p not in projected]
    units = []
    for i, (prepared, layers) in enumerate(plans):
        units += [(i, la, names) for names in groups for la in layers]
        if whole:
            units.append((i, ALL_LAYERS, whole))

    def rank(unit):
        names = unit[2]
        return min((_LONGEST_FIRST.index(n) for n in names if n in _LONGEST_FIRST), default=len(_LONGEST_FIRST))

    return sorted(units, key=rank)  # stable: within a rank, caches, probes and layers keep their order


def _run_units(units, plans, config, params, progress: Progress) -> Iterator[tuple[int, int, list]]:
    args = [(plans[i][0], la, names, params, config.exact, config.tune_thresholds, config.calibrate, config.bootstrap)
            for i, la, names in units]
    if config.jobs > 1 and len(units) > 1:
        from joblib import Parallel, delayed, parallel_config

        # One thread per worker: the workers together use --jobs cores, not jobs x cores.
        with parallel_config(backend="loky", inner_max_num_threads=1):
            results = Parallel(n_jobs=config.jobs, return_as="generator")(delayed(_layer_job)(*a) for a in args)
            for (i, la, names), out in zip(units, results):
                progress.advance(len(names) * len(plans[i][0].folds), f"{plans[i][0].encoder} layer {la}")
                yield i, la, out
        return
    for (i, la, names), a in zip(units, args):
        out = _layer_job(*a)
        progress.advance(len(names) * len(plans[i][0].folds), f"{plans[i][0].encoder} layer {la}")
        yield i, la, out


def run_probe(config: ProbeConfig, progress: Progress | None = None) -> ProbeResults:
    """Probe every (cache, layer, probe) of ``config``; write the output folder if ``config.out`` is set.

    Raises :class:`ProbeInputError` for bad input (missing column, unknown label, too few speakers,
    single-class training fold, unknown probe or parameter, layers out of range).
    """
    progress = progress or NoProgress()
    if not config.caches:
        raise ProbeInputError("give at least one cache file")
    if config.tune_thresholds and config.task.kind == "multiclass":
        raise ProbeInputError("--tune-thresholds applies to binary and multilabel tasks; a multiclass probe predicts the most probable class")
    if config.class_weight not in (None, *ClassWeight.names()):
        raise ProbeInputError(f"--class-weight must be {' or '.join(ClassWeight.names())} (or omitted), not {config.class_weight!r}")
    if config.calibrate is not None and (config.calibrate not in METHODS or config.task.kind == "multiclass"):
        raise ProbeInputError(f"--calibrate {config.calibrate}: use temperature or isotonic, for a binary or multilabel task")
    params = resolve_params(tuple(config.probes), config.params, config.seed, config.class_weight, exact=config.exact)
    caches = [EmbeddingCache(p) for p in config.caches]
    names = encoder_names(caches)
    plans: list[tuple[Prepared, tuple[int, ...]]] = []
    for cache, name in zip(caches, names):
        prepared = prepare(cache, config.task, config.protocol(), manifest=config.manifest, encoder=name)
        layers = prepared.layers(config.layers)
        if plans and prepared.targets.classes != plans[0][0].targets.classes:
            raise ProbeInputError(
                f"{cache.path} yields classes {prepared.targets.classes}, unlike {plans[0][0].cache.path} "
                f"({plans[0][0].targets.classes}); probe them separately"
            )
        plans.append((prepared, layers))

    units = _work(plans, config, params)
    progress.start(sum(len(names_) * len(plans[i][0].folds) for i, _la, names_ in units))
    outcomes: dict[tuple[int, str], dict[int, LayerOutcome]] = {}
    rows: list[dict] = []
    for i, layer, out in _run_units(units, plans, config, params, progress):
        for name, outcome, row in out:
            outcomes.setdefault((i, name), {})[layer] = outcome
            rows.append(row)
    order = {(p.encoder, name): k for k, (p, _l) in enumerate(plans) for name in config.probes}
    rows.sort(key=lambda r: (order[(r["encoder"], r["probe"])], config.probes.index(r["probe"]), r["layer"]))
    oof = {(plans[i][0].encoder, name): oof_predictions(plans[i][0], name, per_layer) for (i, name), per_layer in outcomes.items()}

    cfg = asdict(config)
    cfg.pop("out")
    cfg["caches"] = [str(c) for c in config.caches]
    cfg["params"] = [[k, v] for k, v in config.params]
    cfg["probe_params"] = params
    doc = results_document(
        config.task, plans[0][0].targets.classes, HEADLINE_AGGREGATE, cfg, config.seed, [cache_entry(p) for p, _l in plans], rows,
        extra={"timing": _timing(rows)},
    )
    # Tied sets and calibration are read off the out-of-fold predictions just made (no refitting).
    doc = annotate_calibration(annotate_results(doc, list(oof.values())), list(oof.values()))
    files: dict[str, Path] = {}
    if config.out:
        from probekit.report.outputs import write_outputs

        files = write_outputs(doc, Path(config.out), oof=list(oof.values()))
    return ProbeResults(document=doc, files=files, oof=oof)


def _layer_weights(outcome: LayerOutcome) -> dict:
    """A layer-weighted probe's learned weights, mean and std over folds, from its fold reports."""
    weights = [r["layer_weights"] for r in outcome.reports if r and "layer_weights" in r]
    if not weights:
        return {}
    w = np.asarray(weights, dtype=float)
    return {"layer_weights": w.mean(0).tolist(), "layer_weights_std": w.std(0).tolist()}


def _timing(rows: list[dict]) -> dict:
    """Seconds spent per probe (fit and predict over every fold and layer), for the closing table."""
    out: dict[str, float] = {}
    for r in rows:
        out[r["probe"]] = round(out.get(r["probe"], 0.0) + float(r.get("seconds", 0.0)), 3)
    return {"seconds_per_probe": out}


__all__ = ["ProbeConfig", "ProbeResults", "parse_layers", "run_probe"]
