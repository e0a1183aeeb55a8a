"""``probekit report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from probekit.cli._app import app, user_errors


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Output folders of `probekit probe` or `probekit sweep` (each holding results.json).")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    stats: Annotated[Path | None, typer.Option(help="A stats.json of `probekit stats` (default: one found in or beside each run folder).")] = None,
) -> None:
    """One self-contained HTML page (no network needed to view it): layer curves on a common depth axis with
    tied layers, layer weights, the best layer, calibration, the dataset and the protocol."""
    from probekit.report.html import write_html_report

    with user_errors():
        path = write_html_report(run_dirs, out, stats=stats)
    typer.echo(f"wrote {path}")
