#!/usr/bin/env bash
# Create (once) the Python environment for development and CI, outside the clone, keyed by the lock
# file, so every clone on this machine reuses it. Prints the environment's path on its last line.
# The GPU extra (deepspeed, vllm, liger) is for the trainer image only and never installed here.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet "uv>=0.5" >&2
key=$( (cat "$here/uv.lock"; echo extras=operator,trainer,dev) | sha256sum | cut -c1-16)
root="${POSTTRAIN_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/posttrain/venv}"
venv="$root/$key"
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$root"
  UV_PROJECT_ENVIRONMENT="$venv" uv sync --frozen --project "$here" \
    --extra operator --extra trainer --extra dev --python 3.11 >&2
  touch "$venv/.complete"
else
  # The dependencies are in place; (re)install only this clone's own package, editable.
  UV_PROJECT_ENVIRONMENT="$venv" uv sync --frozen --project "$here" --inexact \
    --extra operator --extra trainer --extra dev --python 3.11 >&2
fi
echo "$venv"
