#!/usr/bin/env bash
# The test command (README, .ci/run): sets up what it needs, then lint, types, layers and tests.
#   hack/test.sh                 everything (unit, cluster, e2e)
#   hack/test.sh tests/unit      only the given pytest arguments (the checks still run)
# The control plane is built (once, cached) in the background while the Python environment installs.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONDONTWRITEBYTECODE=1

mkdir -p .posttrain
hack/build-testenv.sh > .posttrain/build-testenv.log 2>&1 &
build_pid=$!
venv=$(hack/python-env.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
# The environment is shared by every clone on this machine (keyed by the lock file): import this
# checkout's sources, whichever clone installed the editable package last.
export PYTHONPATH="$PWD/operator:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"

echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
echo "== control plane build"
if ! wait "$build_pid"; then tail -n 40 .posttrain/build-testenv.log; exit 1; fi
POSTTRAIN_TESTENV_BIN=$(tail -n 1 .posttrain/build-testenv.log)
export POSTTRAIN_TESTENV_BIN
echo "   $POSTTRAIN_TESTENV_BIN"
echo "== pytest"
if [ "$#" -gt 0 ]; then exec pytest "$@"; fi
exec pytest -p no:cacheprovider -q -ra
