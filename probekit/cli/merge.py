"""``probekit merge``: join shard caches into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from probekit.cli._app import app, user_errors


@app.command()
def merge(
    shards: Annotated[list[Path], typer.Argument(help="Every shard file of one extraction (<slug>.shard-i-of-n.h5); paths not ending in .h5 are ignored.")],
    out: Annotated[Path, typer.Option(help="The merged cache file to write.")],
    manifest: Annotated[Path | None, typer.Option(help="Manifest giving the row order (default: the one recorded in the shards).")] = None,
) -> None:
    """Merge the shard caches written by `probekit extract --shard i/n` into one cache, rows in manifest order."""
    from probekit.cache import EmbeddingCache
    from probekit.extract._extract import merge_shard_files

    # Only finished caches: a glob such as cache/x/*.shard-* also matches a running shard's
    # <name>.h5.partial/ journal or <name>.h5.tmp file.
    caches = [p for p in shards if p.suffix == ".h5"]
    ignored = [p for p in shards if p.suffix != ".h5"]
    if ignored:
        typer.echo(f"ignoring {len(ignored)} path(s) that are not .h5 caches: {', '.join(map(str, ignored[:5]))}", err=True)
    with user_errors():
        path = merge_shard_files(caches, out, manifest=manifest)
    c = EmbeddingCache(path)
    typer.echo(f"{path}: {len(c)} segments x {c.num_layers} layers x {c.dim} dims from {len(shards)} shard(s)")
