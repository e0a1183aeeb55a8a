"""``probekit predict``: score audio files or a manifest with an exported probe; timelines for whole calls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.cli._app import app


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by `probekit export`.")],
    inputs: Annotated[list[Path], typer.Argument(help="Audio files, or a manifest (.csv/.tsv/.jsonl).")],
    out: Annotated[Path, typer.Option(help="Output folder for predictions.csv (and timelines).")] = Path("predictions"),
    window: Annotated[Optional[float], typer.Option(help="Timeline window in seconds (with --hop): one CSV and PNG per file.")] = None,
    hop: Annotated[Optional[float], typer.Option(help="Timeline hop in seconds.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Items or windows per encoder call.")] = 8,
) -> None:
    """Score INPUTS with the probe in MODEL_DIR; the encoder runs only up to the exported layer."""
    from probekit.deploy.export import ExportError
    from probekit.manifest import ManifestError
    from probekit.deploy.scorer import ScorerError, load_scorer
    from probekit.deploy.timeline import AudioReadError

    if (window is None) != (hop is None):
        typer.echo("error: give --window and --hop together", err=True)
        raise typer.Exit(2)
    try:
        scorer = load_scorer(model_dir, device=device)
        if window is None:
            preds = scorer.predict([str(p) for p in inputs], batch_size=batch_size)
            path = preds.to_csv(out / "predictions.csv")
            typer.echo(f"scored {len(preds)} items -> {path}")
            return
        for src in inputs:
            stem = out / Path(src).stem
            tl = scorer.timeline(src, window, hop, csv_path=f"{stem}.timeline.csv", png_path=f"{stem}.timeline.png",
                                 batch_size=batch_size, progress=True)
            typer.echo(f"{src}: {len(tl.start)} windows over {tl.duration:.1f} s -> {stem}.timeline.csv, {stem}.timeline.png")
    except ManifestError as exc:
        typer.echo(f"error: {exc}", err=True)
        for line, msg in getattr(exc, "problems", []):
            typer.echo(f"  line {line}: {msg}", err=True)
        raise typer.Exit(1) from None
    except (ExportError, ScorerError, AudioReadError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
