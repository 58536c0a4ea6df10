#!/usr/bin/env bash
# gpu_acceptance.sh - run the GPU acceptance checks on this node (see scripts/gpu_acceptance.py).
#
#   bash scripts/gpu_acceptance.sh [--out DIR] [--steps N] [--target 0.9925] [--data-dir DIR]
#
# Run it on a GPU node, e.g. inside `salloc --nodes=1 --gpus-per-node=4 --ntasks-per-node=4`, in
# the GPU environment (`make setup GPU=1`; the python is $PYTHON, else .venv-gpu, else .venv).
# On a CPU machine it runs too: the GPU steps are reported skipped, never passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ]; then
  for venv in "${VENV:-}" .venv-gpu .venv; do
    [ -n "$venv" ] && [ -x "$venv/bin/python" ] && { PYTHON=$venv/bin/python; break; }
  done
fi
[ -n "${PYTHON:-}" ] || { echo "error: no .venv-gpu or .venv: run 'make setup GPU=1' first, or set PYTHON" >&2; exit 2; }
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "$PYTHON" scripts/gpu_acceptance.py "$@"
