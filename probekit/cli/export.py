"""``probekit export``: fit one (cache, layer, probe, task) on every row and save a safe, hashed folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.cli._app import app


@app.command()
def export(
    cache: Annotated[Path, typer.Argument(help="Embedding cache (.h5) written by `probekit extract`.")],
    layer: Annotated[int, typer.Option(help="Hidden state to export (0 = embedding output); usually the best layer in results.json.")],
    task: Annotated[str, typer.Option(help="binary | multiclass | multilabel.")],
    target: Annotated[str, typer.Option(help="Label column in the cache metadata.")],
    out: Annotated[Path, typer.Option(help="New, empty folder for the export.")],
    positive: Annotated[Optional[str], typer.Option(help="Positive label for --task binary, e.g. negative.")] = None,
    probe: Annotated[str, typer.Option(help="logreg | mlp | lgbm.")] = "logreg",
    label: Annotated[Optional[list[str]], typer.Option(help="Multi-label subset (repeat the option); default: all labels.")] = None,
    params: Annotated[Optional[str], typer.Option(help='Probe hyperparameters as JSON, e.g. \'{"C": 0.5}\'.')] = None,
    threshold: Annotated[Optional[list[float]], typer.Option(help="Decision threshold per output label (repeat); default 0.5.")] = None,
    results: Annotated[Optional[Path], typer.Option(help="results.json from `probekit probe` to take the CV metrics from (else CV runs here).")] = None,
    exclude_speaker: Annotated[Optional[list[str]], typer.Option(help="Leave these speakers out of training (repeat), e.g. to test on them.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed for the probe.")] = 0,
) -> None:
    """Fit the chosen probe on all rows of CACHE at --layer and export it (no pickle) for `probekit predict`."""
    from probekit.cache import CacheError
    from probekit.deploy.export import ExportError, export_probe

    try:
        hyper = json.loads(params) if params else {}
        if not isinstance(hyper, dict):
            raise ValueError("--params must be a JSON object")
    except (json.JSONDecodeError, ValueError) as exc:
        typer.echo(f"error: --params: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        folder = export_probe(cache, layer, out, task=task, target=target, positive=positive, labels=label or None,
                              probe=probe, params=hyper, thresholds=threshold or None, results=results,
                              exclude_speakers=exclude_speaker or (), seed=seed)
    except (CacheError, ExportError, ValueError, IndexError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    config = json.loads((folder / "config.json").read_text())
    pooled = config.get("metrics", {}).get("pooled") or config.get("metrics", {}).get("row", {})
    shown = ", ".join(f"{k}={v:.3f}" for k, v in pooled.items() if isinstance(v, float))
    typer.echo(f"exported {probe} on hidden state {layer} of {config['encoder']['model']} -> {folder}")
    if shown:
        typer.echo(f"cross-validated: {shown}")
