#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Debian packages: Chromium for the dashboard tests, PostgreSQL 15 for the server tests,
# a C compiler for mldash's speed-ups.
need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)  # builds mldash/_speedups.c
[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || need_apt+=(postgresql-15)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi

# torch first, pinned to the CPU build (a plain "torch" requirement pulls a CUDA build).
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e '.[all,dev]' tensorflow
