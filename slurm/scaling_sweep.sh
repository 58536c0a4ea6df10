#!/usr/bin/env bash
# scaling_sweep.sh - submit the throughput benchmark at several node counts, then a report job that
# runs after all of them (--dependency=afterany) and writes CSV, JSON, Markdown and PNG plots.
#
#   slurm/scaling_sweep.sh [--site FILE] [NODE_COUNT ...]          (default: 1 2)
#
# --site FILE: a site profile (slurm/sites/*.toml); the benchmark script is rendered from it into the
#   sweep folder (with MNIST_HPC_PYTHON, default .venv/bin/python of this checkout, else python3).
# Environment: MNIST_HPC_ARGS (bench arguments, default "--model cnn --synthetic"),
#   MNIST_HPC_SWEEP_DIR (default runs/sweep-<date>-<time>), MNIST_HPC_SETUP (as in the templates).
# sbatch options come from the usual SBATCH_* variables, e.g. SBATCH_PARTITION=gpu SBATCH_ACCOUNT=me,
# or per node: MNIST_HPC_SWEEP_SBATCH="--ntasks-per-node=4 --gpus-per-node=4" (split on white space).
# MNIST_HPC_SWEEP_SERIAL=1 runs the benchmarks one after another instead of side by side.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
site=
if [ "${1:-}" = --site ]; then
  [ $# -ge 2 ] || { echo "scaling_sweep.sh: --site needs a file (a site profile, e.g. slurm/sites/generic-pmix.toml)" >&2; exit 2; }
  site=$2
  shift 2
fi
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 2)
for n in "${counts[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "scaling_sweep.sh: node count '$n' is not a positive integer" >&2; exit 2; }
done
script=$here/bench.sbatch
if [ -n "$site" ]; then  # rendered (and the profile checked) before anything is created or submitted
  python=${MNIST_HPC_PYTHON:-$here/../.venv/bin/python}
  [ -x "$python" ] || python=python3
  rendered=$("$python" -m mnist_hpc slurm render bench --site "$site") || exit 2
fi
sweep_dir=${MNIST_HPC_SWEEP_DIR:-$PWD/runs/sweep-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$sweep_dir"
if [ -n "$site" ]; then
  script=$sweep_dir/bench.sbatch
  printf '%s\n' "$rendered" > "$script"
fi
read -r -a per_job <<< "${MNIST_HPC_SWEEP_SBATCH:-}"
export MNIST_HPC_ARGS=${MNIST_HPC_ARGS:---model cnn --synthetic} MNIST_HPC_RUN_DIR=$sweep_dir
ids=()
after=()  # MNIST_HPC_SWEEP_SERIAL=1: one job at a time (nodes that share hardware, e.g. an emulated cluster)
for n in "${counts[@]}"; do
  ids+=("$(sbatch --parsable --nodes="$n" "${after[@]}" "${per_job[@]}" --output="$sweep_dir/bench-%j.out" "$script")")
  echo "submitted ${n}-node benchmark: job ${ids[-1]}"
  if [ "${MNIST_HPC_SWEEP_SERIAL:-0}" = 1 ]; then after=(--dependency="afterany:${ids[-1]}"); fi
done
# the report job runs where and as the benchmarks did: their partition, account and QOS, and their
# script's environment section (the site's modules and variables, MNIST_HPC_SETUP or the venv)
{
  echo "#!/bin/bash"
  grep -E '^#SBATCH --(partition|account|qos)=' "$script" || true
  sed -n '/^# ---- environment:/,/^# ---- arguments:/p' "$script"
  printf 'exec python -m mnist_hpc bench report %q\n' "$sweep_dir"
} > "$sweep_dir/report.sbatch"
report=$(sbatch --parsable --nodes=1 --ntasks=1 --job-name=mnist-report --output="$sweep_dir/report-%j.out" \
  --dependency="afterany:$(IFS=:; echo "${ids[*]}")" "$sweep_dir/report.sbatch")
echo "submitted report: job $report (after ${ids[*]}); results in $sweep_dir"
