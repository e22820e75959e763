# Sourced by hack/test.sh and hack/unit.sh: the offline environment, the Python environment (created
# once per lock file) with this checkout's sources first on the path, and the lint, type and layer checks.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONDONTWRITEBYTECODE=1
posttrain_venv() {
  local venv
  venv=$(hack/python-env.sh | tail -n 1)
  export PATH="$venv/bin:$PATH"
  # The environment is shared by every clone on this machine (keyed by the lock file): import this
  # checkout's sources, whichever clone installed the editable package last.
  export PYTHONPATH="$PWD/operator:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
}
posttrain_checks() {
  echo "== ruff"; ruff check . && ruff format --check .
  echo "== mypy"; mypy
  echo "== import-linter"; lint-imports
}
