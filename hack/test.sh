#!/usr/bin/env bash
# The test command (README, .ci/run): sets up what it needs, then lint, types, layers and tests.
#   hack/test.sh                 everything (unit, cluster, e2e)
#   hack/test.sh tests/unit      only the given pytest arguments (the checks still run)
# The control plane is built (once, cached) in the background while the Python environment installs.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/checks.sh

mkdir -p .posttrain
# The real-node tier (tests/node) runs where a node can: as root with apt (CI's machines). Its
# binaries and packages come with the control plane; its images are built once the venv is there.
# POSTTRAIN_NODE_TESTS=0 opts out.
node_tier=0
if [ "${POSTTRAIN_NODE_TESTS:-}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  node_tier=1
fi
build_args=()
[ "$node_tier" = 1 ] && build_args=(--node)
hack/build-testenv.sh "${build_args[@]}" > .posttrain/build-testenv.log 2>&1 &
build_pid=$!
posttrain_venv
posttrain_checks
echo "== control plane build"
if ! wait "$build_pid"; then tail -n 40 .posttrain/build-testenv.log; exit 1; fi
POSTTRAIN_TESTENV_BIN=$(tail -n 1 .posttrain/build-testenv.log)
export POSTTRAIN_TESTENV_BIN
echo "   $POSTTRAIN_TESTENV_BIN"
if [ "$node_tier" = 1 ]; then
  echo "== images (real-node tier)"
  if ! hack/build-images.sh > .posttrain/build-images.log 2>&1; then tail -n 40 .posttrain/build-images.log; exit 1; fi
  POSTTRAIN_IMAGES_DIR=$(tail -n 1 .posttrain/build-images.log)
  export POSTTRAIN_IMAGES_DIR POSTTRAIN_NODE_TESTS=1
  echo "   $POSTTRAIN_IMAGES_DIR"
fi
echo "== pytest"
if [ "$#" -gt 0 ]; then exec pytest "$@"; fi
exec pytest -p no:cacheprovider -q -ra
