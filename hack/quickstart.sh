#!/usr/bin/env bash
# The quickstart (README): installs what it needs (once, cached), makes the tiny student model the
# example trains (no download), then runs examples/quickstart/ on this machine with `posttrain run`.
#   hack/quickstart.sh                          run it (an interrupted run resumes where it stopped)
#   hack/quickstart.sh --fresh                  start over; other arguments go to `posttrain run`
#   hack/quickstart.sh --teacher BASE_URL MODEL
#       teacher and judge from any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, a
#       hosted API) instead of the rule-based arithmetic stand-in and the verifier; its API key, if it
#       needs one, from the environment variable TEACHER_API_KEY
# State, artifacts and the report go to .posttrain/ in the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# One thread per process: the tiny models gain nothing from more, and the served student and a
# workload running side by side would otherwise fight over the cores (several times slower).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--teacher" ]; then
    [ $# -ge 3 ] || { echo "usage: hack/quickstart.sh --teacher BASE_URL MODEL [posttrain run arguments]" >&2; exit 2; }
    args+=(--endpoint "teacher=$2,$3" --endpoint "judge=$2,$3")
    if [ -n "${TEACHER_API_KEY:-}" ]; then
      export POSTTRAIN_API_KEY_TEACHER="$TEACHER_API_KEY" POSTTRAIN_API_KEY_JUDGE="$TEACHER_API_KEY"
    fi
    shift 3
  else
    args+=("$1")
    shift
  fi
done
venv=$(hack/python-env.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
# The environment is shared by every clone on this machine (keyed by the lock file): import this
# checkout's sources, whichever clone installed the editable package last.
export PYTHONPATH="$PWD/operator:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
posttrain make-tiny-model examples/quickstart/models/tiny-student --seed 2 >/dev/null
exec posttrain run examples/quickstart/ "${args[@]}"
