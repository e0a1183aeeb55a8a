"""The ``probekit`` command line: thin Typer commands that parse, call one library function, print."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    """probekit: layer-wise probing of speech encoders for emotion."""
