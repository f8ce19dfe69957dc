#!/usr/bin/env bash
# The whole test suite, as CI runs it: install, then pytest (services start in fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
if [ $# -eq 0 ]; then
  # The core once more without the compiled speed-ups: what a machine with no C
  # compiler runs (about 15 s).
  MLDASH_PURE_PYTHON=1 python3 -m pytest -q -p no:cacheprovider tests/core
fi
exec python3 -m pytest -q -rs --durations=15 "$@"
