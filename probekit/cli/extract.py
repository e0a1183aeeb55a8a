"""``probekit extract``: one per-layer embedding cache per model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from probekit.choices import Device, DType, Pooling, WhisperMode
from probekit.cli._app import app, user_errors
from probekit.progress import make_console


@app.command()
def extract(
    manifest: Annotated[Path, typer.Argument(help="Manifest (CSV, TSV or JSONL) with id, path, speaker and label columns.")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Hugging Face hub id or local folder; repeat for several models.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the caches (default: cache/<manifest-stem>).")] = None,
    pooling: Annotated[Pooling, typer.Option(help="Pooling over each layer's valid frames (mean+std doubles the dimension).")] = Pooling.mean,
    dtype: Annotated[DType, typer.Option(help="Storage precision.")] = DType.float16,
    device: Annotated[Device, typer.Option(help="Where the encoder runs (auto: cuda when available).")] = Device.auto,
    batch_seconds: Annotated[float, typer.Option(help="Bound on padded audio seconds per batch.")] = 120.0,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) of every --model.")] = None,
    whisper_mode: Annotated[WhisperMode, typer.Option(help="Whisper only: padded (30 s window, exact) or fast (real frames only).")] = WhisperMode.padded,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip rows that cannot be encoded (missing, unreadable, empty, truncated, silent...) and exit 0; without it, bad rows found by the pre-pass stop the run before any model loads.")] = False,
    shard: Annotated[str | None, typer.Option(help="Extract only shard i/n (0-based) into <slug>.shard-i-of-n.h5; torchrun's RANK/WORLD_SIZE are used when absent.")] = None,
    workers: Annotated[int | None, typer.Option(help="Threads decoding audio ahead of the encoder (default: half the cores, 2 to 8).")] = None,
    profile: Annotated[bool, typer.Option("--profile", help="Print where the wall time went (decode, features, forward, pooling, writing) and peak memory; exact on CUDA.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Extract every layer's pooled hidden states of MANIFEST's segments into one HDF5 cache per model.

    Interrupted runs resume where they stopped when rerun with the same command; a finished cache is left as is.
    """
    from probekit.extract._extract import ExtractInterrupted, extract_models, format_profile, parse_shard

    err = make_console(stderr=True)
    if batch_seconds <= 0:
        raise typer.BadParameter("must be positive", param_hint="--batch-seconds")
    if workers is not None and workers < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--workers")
    try:
        shard_ = parse_shard(shard)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None
    from probekit.extract.encoders import EncoderSpec

    specs = [EncoderSpec(model=m, revision=revision, whisper_mode=whisper_mode.value, device=device.value) for m in model]
    with user_errors(interrupted="finished batches are kept next to the cache (<cache>.partial/); run the same command to resume"):
        try:
            results = extract_models(manifest, specs, out_dir=out, pooling=pooling.value, dtype=dtype.value, batch_seconds=batch_seconds,
                                     shard=shard_, progress=not quiet, workers=workers, profile=profile, skip_bad=skip_bad)
        except ExtractInterrupted as exc:
            typer.echo(f"\n{exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
    bad = 0
    for r in results:
        state = "already up to date" if r.up_to_date else (
            f"{r.batches_computed} batch(es) computed, {r.batches_resumed} resumed; rows: {r.rows_reused} reused, "
            f"{r.rows_added} added, {r.rows_retried} retried, {r.rows_changed} recomputed (audio changed)")
        typer.echo(
            f"{r.path}: {r.n_segments} segments x {r.num_layers} layers x {r.dim} dims, "
            f"{r.audio_seconds:.1f} s of audio, {r.wall_seconds:.1f} s wall ({state}); {len(r.skipped)} row(s) skipped"
        )
        if profile and r.timings:
            typer.echo("  " + format_profile(r))
        for s in r.skipped:
            typer.echo(f"  skipped line {s['line']}, id {s['id']}: {s['reason']}")
        bad += len(r.skipped)
    if bad and not skip_bad:
        err.print(f"{bad} row(s) could not be encoded (listed above and recorded in the cache); fix them and rerun "
                  "the same command (only those rows are computed), or pass --skip-bad to accept the cache as is", highlight=False)
        raise typer.Exit(1)
