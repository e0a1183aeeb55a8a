"""``probekit merge``: join shard caches into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from probekit.cli._app import app


@app.command()
def merge(
    shards: Annotated[list[Path], typer.Argument(help="Every shard file of one extraction (<slug>.shard-i-of-n.h5).")],
    out: Annotated[Path, typer.Option(help="The merged cache file to write.")],
    manifest: Annotated[Path | None, typer.Option(help="Manifest giving the row order (default: the one recorded in the shards).")] = None,
) -> None:
    """Merge the shard caches written by `probekit extract --shard i/n` into one cache, rows in manifest order."""
    from probekit.cache import CacheError, EmbeddingCache
    from probekit.extract._extract import ExtractError, merge_shard_files
    from probekit.manifest import ManifestError

    try:
        path = merge_shard_files(shards, out, manifest=manifest)
    except (CacheError, ExtractError, ManifestError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    c = EmbeddingCache(path)
    typer.echo(f"{path}: {len(c)} segments x {c.num_layers} layers x {c.dim} dims from {len(shards)} shard(s)")
