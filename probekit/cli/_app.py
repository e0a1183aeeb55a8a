"""The Typer application every command module registers itself on."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="probekit: which speech encoder, and which layer of it, carries a caller's emotion.",
)


@app.callback()
def _root() -> None:
    """probekit: which speech encoder, and which layer of it, carries a caller's emotion."""
