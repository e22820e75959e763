#!/usr/bin/env bash
# The fast loop: lint, types, layers and the unit tests, without waiting for the control plane build.
#   hack/unit.sh                       every unit test
#   hack/unit.sh tests/unit/plan -x    only these pytest arguments
# Cluster, node and e2e tests need hack/test.sh (it builds and caches the Go binaries first).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/checks.sh
posttrain_venv
posttrain_checks
echo "== pytest (unit)"
if [ "$#" -gt 0 ]; then exec pytest -p no:cacheprovider "$@"; fi
exec pytest -p no:cacheprovider -q tests/unit
