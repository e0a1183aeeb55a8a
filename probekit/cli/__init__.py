"""The ``probekit`` command line. Each command lives in its own thin module: parse, call one library function, print."""

from __future__ import annotations

from probekit.cli._app import app

# Importing a command module registers its command on `app`.
from probekit.cli import version  # noqa: E402,F401
from probekit.cli import run  # noqa: E402,F401
from probekit.cli import stats  # noqa: E402,F401

__all__ = ["app"]
