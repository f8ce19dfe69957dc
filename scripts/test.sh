#!/usr/bin/env bash
# The whole test suite, as CI runs it: install, then pytest (services start in fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
exec python3 -m pytest -q -rs --durations=15 "$@"
