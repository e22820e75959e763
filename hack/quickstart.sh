#!/usr/bin/env bash
# The quickstart (README): installs what it needs (once, cached), makes the two tiny models the example
# serves and trains (no download), then runs examples/quickstart/ on this machine with `posttrain run`.
#   hack/quickstart.sh                 run it (an interrupted run resumes where it stopped)
#   hack/quickstart.sh --fresh         start over; other arguments go to `posttrain run`
# State, artifacts and the report go to .posttrain/ in the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
venv=$(hack/python-env.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
# The environment is shared by every clone on this machine (keyed by the lock file): import this
# checkout's sources, whichever clone installed the editable package last.
export PYTHONPATH="$PWD/operator:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
models=examples/quickstart/models
posttrain make-tiny-model "$models/tiny-teacher" --seed 1 >/dev/null
posttrain make-tiny-model "$models/tiny-student" --seed 2 >/dev/null
exec posttrain run examples/quickstart/ "$@"
