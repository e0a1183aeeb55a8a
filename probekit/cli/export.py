"""``probekit export``: fit one (cache, layer, probe, task) on every row and save a safe, hashed folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.choices import Calibration, Protocol, TaskKind
from probekit.cli._app import app, user_errors


@app.command()
def export(
    cache: Annotated[Path, typer.Argument(help="Embedding cache (.h5) written by `probekit extract`.")],
    layer: Annotated[int, typer.Option(help="Hidden state to export (0 = embedding output); usually the best layer in results.json.")],
    out: Annotated[Path, typer.Option(help="New, empty folder for the export.")],
    results: Annotated[Optional[Path], typer.Option(help="results.json of `probekit probe` or `probekit sweep`: take the task, the winner's parameters, the protocol and tuned thresholds from it.")] = None,
    task: Annotated[Optional[TaskKind], typer.Option(help="What to predict (not needed with --results).")] = None,
    target: Annotated[Optional[str], typer.Option(help="Label column (not needed with --results).")] = None,
    positive: Annotated[Optional[str], typer.Option(help="Positive label for --task binary, e.g. negative.")] = None,
    label: Annotated[Optional[list[str]], typer.Option(help="Multi-label subset (repeat the option); default: all labels.")] = None,
    probe: Annotated[Optional[str], typer.Option(help="logreg, mlp, lgbm or logreg-fast (default logreg; with --results, the row's).")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Probe hyperparameter NAME=VALUE, e.g. C=0.5. Repeatable.")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="The reference scikit-learn estimator instead of the fast path.")] = False,
    cv: Annotated[Protocol, typer.Option(help="Protocol of the cross-validated metrics (as in `probekit probe`).")] = Protocol.speaker_kfold,
    folds: Annotated[int, typer.Option(help="K for speaker-kfold.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for folds and the probe.")] = 0,
    manifest: Annotated[Optional[Path], typer.Option(help="Labelling manifest joined by id (default: the one the cache was extracted from).")] = None,
    threshold: Annotated[Optional[list[float]], typer.Option(help="Decision threshold per output label (repeat); default 0.5, or tuned with --tune-thresholds.")] = None,
    tune_thresholds: Annotated[bool, typer.Option("--tune-thresholds", help="F1-optimal thresholds from inner speaker folds of the training rows (as in probe).")] = False,
    calibrate: Annotated[Optional[Calibration], typer.Option(help="temperature or isotonic, fitted on inner speaker folds; applied by predict.")] = None,
    exclude_speaker: Annotated[Optional[list[str]], typer.Option(help="Leave these speakers out of training (repeat), e.g. to test on them.")] = None,
) -> None:
    """Fit the chosen probe on all rows of CACHE at --layer and export it (no pickle) for `probekit predict`.

    The cross-validated metrics it prints come from the same core as `probekit probe`: the same settings give the same numbers.
    """
    from probekit.deploy.export import export_probe
    from probekit.probe.evaluate import EvalProtocol
    from probekit.probe.params import parse_param

    with user_errors("nothing was exported; rerun the same command"):
        folder = export_probe(
            cache, layer, out, task=task.value if task else None, target=target, positive=positive, labels=label or None, probe=probe,
            params=dict(parse_param(p) for p in (param or ())), exact=exact, protocol=EvalProtocol(cv=cv.value, folds=folds, seed=seed),
            manifest=manifest, thresholds=threshold or None, tune=tune_thresholds,
            calibrate=calibrate.value if calibrate else None, results=results,
            exclude_speakers=exclude_speaker or (),
        )
    config = json.loads((folder / "config.json").read_text())
    typer.echo(f"exported {config['probe']['kind']} {config['probe']['params']} on hidden state {layer} of {config['encoder']['name']} -> {folder}")
    row = config["metrics"]["cross_validated"]
    if row:
        shown = ", ".join(f"{k}={v['value']:.3f}" for k, v in row["metrics"].items() if isinstance(v.get("value"), float))
        p = config["protocol"]
        typer.echo(f"cross-validated ({p['cv']}{', ' + str(p['folds']) + ' folds' if p['cv'] == 'speaker-kfold' else ''}, seed {p['seed']}): {shown}")
