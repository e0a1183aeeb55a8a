"""``probekit stats``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.cli._app import app


@app.command()
def stats(
    source: Annotated[Path, typer.Argument(help="A manifest (.csv/.tsv/.jsonl) or a cache (.h5).")],
    target: Annotated[Optional[str], typer.Option(help="Label column to analyse (default: the first ';'-set column).")] = None,
    cv: Annotated[str, typer.Option(help="Protocol whose folds are checked for label support: speaker-kfold, loso or split.")] = "speaker-kfold",
    folds: Annotated[int, typer.Option(help="Number of folds for speaker-kfold.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default runs/stats/<input stem>).")] = None,
) -> None:
    """Counts per label and speaker, label co-occurrence heatmap, duration plot and per-fold label support."""
    from probekit.probe.stats import StatsConfig, StatsError, dataset_stats

    try:
        report = dataset_stats(StatsConfig(path=str(source), target=target, cv=cv, folds=folds, seed=seed,
                                           out=str(out) if out else None))
    except StatsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    s = report.summary
    typer.echo(f"{s['segments']} segments, {s['speakers']} speakers, {s['total_hours']:.2f} h; target '{s['target']}'")
    for row in s["labels"]:
        typer.echo(f"  {row['label']:<20} {row['segments']:>7}  {100 * row['share']:5.1f}%")
    if s["folds"].get("error"):
        typer.echo(f"folds: {s['folds']['error']}")
    elif s["folds"]["rows"]:
        worst = min(s["folds"]["rows"], key=lambda r: r["min_test_support"])
        typer.echo(f"least test support: {worst['min_test_support']} ({worst['min_test_label']}) in fold {worst['fold']}")
    for name, path in report.files.items():
        typer.echo(f"wrote {path}")
