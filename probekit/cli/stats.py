"""``probekit stats``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.choices import Protocol
from probekit.cli._app import app, user_errors


@app.command()
def stats(
    source: Annotated[Path, typer.Argument(help="A manifest (.csv/.tsv/.jsonl) or a cache (.h5).")],
    target: Annotated[Optional[str], typer.Option(help="Label column to analyse (default: the first ';'-set column).")] = None,
    cv: Annotated[Protocol, typer.Option(help="Protocol whose folds are checked for label support.")] = Protocol.speaker_kfold,
    folds: Annotated[int, typer.Option(help="Number of folds for speaker-kfold.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default runs/stats/<input stem>).")] = None,
) -> None:
    """Counts per label and speaker, label co-occurrence heatmap, duration plot and per-fold label support."""
    from probekit.probe.stats import StatsConfig, dataset_stats

    with user_errors():
        report = dataset_stats(StatsConfig(path=str(source), target=target, cv=cv.value, folds=folds, seed=seed,
                                           out=str(out) if out else None))
    s = report.summary
    typer.echo(f"{s['segments']} segments, {s['speakers']} speakers, {s['total_hours']:.2f} h; target '{s['target']}'")
    for row in s["labels"]:
        typer.echo(f"  {row['label']:<20} {row['segments']:>7}  {100 * row['share']:5.1f}%")
    if s["folds"].get("error"):
        typer.echo(f"folds: {s['folds']['error']}")
    elif s["folds"]["rows"]:
        worst = min(s["folds"]["rows"], key=lambda r: r["min_test_support"])
        typer.echo(f"least test support: {worst['min_test_support']} ({worst['min_test_label']}) in fold {worst['fold']}")
    for path in report.files.values():
        typer.echo(f"wrote {path}")
