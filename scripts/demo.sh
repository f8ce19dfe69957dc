#!/usr/bin/env bash
# The main job: a tiny training run tracked in .mldash/, then the dashboard on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 examples/custom_loop.py
python3 -m mldash ls
if python3 -c "import mldash.ui" 2>/dev/null; then
  exec python3 -m mldash ui .mldash "$@"
fi
