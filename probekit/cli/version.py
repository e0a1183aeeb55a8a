"""``probekit version``."""

from __future__ import annotations

import typer

from probekit.cli._app import app


@app.command()
def version() -> None:
    """Print the probekit version."""
    from probekit import __version__

    typer.echo(__version__)
