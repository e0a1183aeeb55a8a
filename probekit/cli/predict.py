"""``probekit predict``: score audio files or a manifest with an exported probe; timelines for whole calls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.choices import Device
from probekit.cli._app import app, user_errors


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by `probekit export`.")],
    inputs: Annotated[list[Path], typer.Argument(help="Audio files, or a manifest (.csv/.tsv/.jsonl).")],
    out: Annotated[Path, typer.Option(help="Output folder for predictions.csv (and timelines).")] = Path("predictions"),
    window: Annotated[Optional[float], typer.Option(help="Timeline window in seconds (with --hop): one CSV and PNG per file.")] = None,
    hop: Annotated[Optional[float], typer.Option(help="Timeline hop in seconds.")] = None,
    channel: Annotated[Optional[int], typer.Option(help="Keep this channel (0-based) of multi-channel files, e.g. the caller's side; default: average the channels. A manifest's own channel column wins.")] = None,
    vad: Annotated[bool, typer.Option("--vad/--no-vad", help="Timelines: score only windows where Silero VAD finds speech.")] = True,
    vad_threshold: Annotated[float, typer.Option(help="Silero VAD speech probability (0-1) a 32 ms frame needs to count as speech.")] = 0.5,
    vad_min_speech: Annotated[float, typer.Option(help="Seconds of speech frames a window needs to be scored.")] = 0.25,
    truth: Annotated[Optional[Path], typer.Option(help="Timelines: a manifest whose rows (path, start, end, labels) mark ground truth on the PNG.")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Run a Whisper export in Whisper's fast mode (only the real frames): much faster, not exact for a padded-mode export; see docs/predict.md.")] = False,
    device: Annotated[Device, typer.Option(help="Where the encoder runs (auto: cuda when available).")] = Device.auto,
    batch_size: Annotated[int, typer.Option(help="Items or windows per encoder call.")] = 8,
) -> None:
    """Score INPUTS with the probe in MODEL_DIR; the encoder runs only up to the exported layer.

    Every good input is scored and written even when others are bad; each bad one is named, and the
    command then exits with status 1.
    """
    import csv

    from probekit.deploy.scorer import csv_header, load_scorer
    from probekit.deploy.timeline import AudioReadError, truth_for
    from probekit.deploy.vad import VadSpec
    from probekit.extract.audio import AudioError

    if (window is None) != (hop is None):
        typer.echo("error: give --window and --hop together", err=True)
        raise typer.Exit(2)
    failed: list[tuple[str, str]] = []
    done: list[str] = []
    kept = ""
    with user_errors(lambda: f"{kept or 'nothing was written'}; predict does not resume, so rerun it for the rest"):
        scorer = load_scorer(model_dir, device=device.value, fast=fast)
        if window is None:
            path = out / "predictions.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(csv_header(scorer.labels))
                kept = f"{path} holds the rows scored so far"
                for part in scorer.iter_predict([str(p) for p in inputs], batch_size=batch_size, channel=channel,
                                                on_error="skip"):
                    part.write_rows(writer)
                    fh.flush()
                    done.extend(part.ids)
                    failed.extend(part.failed)
                    kept = f"{path} holds the {len(done)} rows scored so far"
            typer.echo(f"scored {len(done)} items -> {path}")
        else:
            spec = VadSpec(vad_threshold, vad_min_speech) if vad else None
            for src in inputs:
                stem = out / Path(src).stem
                kept = (f"timelines of {len(done)} of {len(inputs)} files are complete; "
                        f"{stem}.timeline.csv holds {Path(src).name}'s windows up to the interruption")
                try:
                    spans = truth_for(truth, src) if truth is not None else ()
                    tl = scorer.timeline(src, window, hop, csv_path=f"{stem}.timeline.csv", png_path=f"{stem}.timeline.png",
                                         batch_size=batch_size, progress=True, channel=channel, vad=spec, truth=spans)
                except (AudioError, AudioReadError) as exc:  # one unreadable input, not the model or an option
                    failed.append((str(src), str(exc)))
                    continue
                done.append(str(src))
                speech = "" if tl.speech is None else f", {int(tl.speech.sum())} with speech scored"
                typer.echo(f"{src}: {len(tl.start)} windows over {tl.duration:.1f} s{speech} -> "
                           f"{stem}.timeline.csv, {stem}.timeline.png")
    if failed:
        typer.echo(f"{len(failed)} input(s) could not be scored (the others were written):", err=True)
        for name, reason in failed:
            typer.echo(f"  {name}: {reason}", err=True)
        raise typer.Exit(1)
