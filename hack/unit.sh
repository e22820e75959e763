#!/usr/bin/env bash
# The fast loop: lint, types, layers and the unit tests, without waiting for the control plane build.
#   hack/unit.sh                       every unit test
#   hack/unit.sh tests/unit/plan -x    only these pytest arguments
# Cluster, node and e2e tests need hack/test.sh (it builds and caches the Go binaries first).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONDONTWRITEBYTECODE=1
venv=$(hack/python-env.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
export PYTHONPATH="$PWD/operator:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
echo "== pytest (unit)"
if [ "$#" -gt 0 ]; then exec pytest -p no:cacheprovider "$@"; fi
exec pytest -p no:cacheprovider -q tests/unit
