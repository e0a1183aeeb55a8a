"""The Typer application every command module registers itself on, and the one way commands report errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

from probekit.errors import ProbekitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="probekit: which speech encoder, and which layer of it, carries a caller's emotion.",
)


@contextmanager
def user_errors(interrupted: str | Callable[[], str] = "nothing was written") -> Iterator[None]:
    """Turn a :class:`ProbekitError` into one line on stderr and its exit status, and Ctrl-C into one line
    saying what was kept (``interrupted``, or a function that says it at that moment) with exit status 130.
    Anything else is a bug and keeps its traceback."""
    try:
        yield
    except ProbekitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: {interrupted() if callable(interrupted) else interrupted}", err=True)
        raise typer.Exit(130) from None
