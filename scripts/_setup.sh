# Sourced by the Quickstart scripts: create .venv once and (re)install probekit when pyproject.toml changes.
# torch is pinned to 2.13.0 in pyproject.toml: a newer or unpinned torch would pull GBs of CUDA wheels.
set -euo pipefail
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.probekit-installed
want="$(sha256sum < pyproject.toml | cut -c1-16)-${PROBEKIT_EXTRAS:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${PROBEKIT_EXTRAS:-}"
  echo "$want" > "$stamp"
fi
# The dev and CI machines keep real assets (a Whisper checkpoint, EmoDB) beside the checkout.
if [ -z "${PROBEKIT_SHARED:-}" ] && [ -d ../shared ]; then
  PROBEKIT_SHARED="$(cd ../shared && pwd)"
  export PROBEKIT_SHARED
fi
