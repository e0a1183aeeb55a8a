"""The ``probekit`` command line. Each command lives in its own thin module: parse, call one library function, print."""

from __future__ import annotations

from probekit.cli._app import app

# Importing a command module registers its command on `app`.
from probekit.cli import export, extract, merge, predict, probe, report, run, stats, sweep, version  # noqa: E402,F401

__all__ = ["app"]
