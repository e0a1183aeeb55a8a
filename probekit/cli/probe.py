"""``probekit probe``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from probekit.choices import Calibration, ClassWeight, Protocol, TaskKind
from probekit.cli._app import app, user_errors
from probekit.progress import make_console


@app.command()
def probe(
    caches: Annotated[list[Path], typer.Argument(help="Embedding cache files (.h5), one per encoder.")],
    task: Annotated[TaskKind, typer.Option(help="What to predict.")],
    target: Annotated[str, typer.Option(help="Label column (one label, or a ';'-separated label set, per row).")],
    positive: Annotated[str | None, typer.Option(help="Binary: the label that makes a row positive, e.g. negative.")] = None,
    probe: Annotated[list[str] | None, typer.Option("--probe", help="Probe(s): logreg, mlp, lgbm, logreg-fast, layer-weights (all layers at once). Repeat for several.")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Use the reference scikit-learn estimators instead of the fast paths.")] = False,
    layers: Annotated[str | None, typer.Option(help="Hidden states to probe, e.g. 0-12 or 2,4,6 (default: all).")] = None,
    cv: Annotated[Protocol, typer.Option(help="speaker-kfold, loso (leave one speaker out) or split (the manifest's train/test column).")] = Protocol.speaker_kfold,
    folds: Annotated[int, typer.Option(help="K for speaker-kfold.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for folds, probes and the bootstrap.")] = 0,
    jobs: Annotated[int, typer.Option(help="Layers evaluated in parallel (worker processes, one thread each).")] = 1,
    manifest: Annotated[Path | None, typer.Option(help="Labelling manifest joined by id (default: the one the cache was extracted from, if unchanged in its audio).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for results.json, results.csv, report.md, plots and oof/.")] = Path("probe_results"),
    param: Annotated[list[str] | None, typer.Option("--param", help="Probe hyperparameter NAME=VALUE or PROBE.NAME=VALUE, e.g. C=0.1, mlp.hidden=256. Repeatable.")] = None,
    class_weight: Annotated[ClassWeight | None, typer.Option(help="'balanced' to weight classes by inverse frequency.")] = None,
    tune_thresholds: Annotated[bool, typer.Option("--tune-thresholds", help="Tune F1-optimal decision thresholds on inner speaker folds (binary, multilabel).")] = False,
    labels: Annotated[str | None, typer.Option(help="Comma-separated label subset (multiclass/multilabel).")] = None,
    min_support: Annotated[int, typer.Option(help="Drop labels with fewer rows than this.")] = 1,
    bootstrap: Annotated[int, typer.Option(help="Speaker resamples for the 95% confidence intervals (0 = none).")] = 1000,
    calibrate: Annotated[Calibration | None, typer.Option(help="temperature or isotonic: calibrate probabilities on inner speaker folds (binary, multilabel).")] = None,
) -> None:
    """Train a probe on every layer of every cache and report which layer carries the target best."""

    from probekit.probe.params import parse_param
    from probekit.probe.probing import ProbeConfig, parse_layers, run_probe
    from probekit.probe.tasks import TaskSpec
    from probekit.progress import WorkProgress
    from probekit.report.render import rich_table, timing_line

    with user_errors("nothing was written; rerun the same command"):
        config = ProbeConfig(
            caches=tuple(str(c) for c in caches),
            task=TaskSpec(kind=task.value, target=target, positive=positive,
                          labels=tuple(s.strip() for s in labels.split(",") if s.strip()) if labels else None, min_support=min_support),
            probes=tuple(probe or ("logreg",)), exact=exact, params=tuple(parse_param(p) for p in (param or ())),
            layers=parse_layers(layers), cv=cv.value, folds=folds, seed=seed, jobs=jobs,
            manifest=str(manifest) if manifest else None, out=str(out),
            class_weight=class_weight.value if class_weight else None, tune_thresholds=tune_thresholds,
            bootstrap=bootstrap, calibrate=calibrate.value if calibrate else None,
        )
        with WorkProgress("probing") as bar:
            results = run_probe(config, progress=bar)
    make_console().print(rich_table(results.document))
    typer.echo(timing_line(results.document))
    for c in results.document["caches"]:
        if c["missing_from_manifest"]["count"]:
            typer.echo(f"note: {c['missing_from_manifest']['count']} row(s) of {c['path']} are not in the manifest and were left out", err=True)
    typer.echo(f"wrote {out}/: " + ", ".join(sorted(n for n in results.files if not n.startswith("oof/"))) + f", oof/ ({len(results.oof)} file(s))")
