#!/usr/bin/env bash
# Quickstart command 2: set up .venv with the dev extra and run the whole test suite.
# Tests that need real assets (../shared or $PROBEKIT_SHARED) skip with the reason when those are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
PROBEKIT_EXTRAS="[dev]" source scripts/_setup.sh
# The import directions of pyproject.toml's [tool.importlinter] contracts come first: a broken one fails the run.
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
