#!/usr/bin/env bash
# scaling_sweep.sh - submit the throughput benchmark at several node counts, then a report job that
# runs after all of them (--dependency=afterany) and writes CSV, JSON, Markdown and PNG plots.
#
#   slurm/scaling_sweep.sh [NODE_COUNT ...]          (default: 1 2)
#
# Environment: MNIST_HPC_ARGS (bench arguments, default "--model cnn --synthetic"),
#   MNIST_HPC_SWEEP_DIR (default runs/sweep-<date>-<time>), MNIST_HPC_SETUP (as in the templates).
# sbatch options come from the usual SBATCH_* variables, e.g. SBATCH_PARTITION=gpu SBATCH_ACCOUNT=me,
# or per node: MNIST_HPC_SWEEP_SBATCH="--ntasks-per-node=4 --gpus-per-node=4" (split on white space).
# MNIST_HPC_SWEEP_SERIAL=1 runs the benchmarks one after another instead of side by side.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 2)
for n in "${counts[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "scaling_sweep.sh: node count '$n' is not a positive integer" >&2; exit 2; }
done
sweep_dir=${MNIST_HPC_SWEEP_DIR:-$PWD/runs/sweep-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$sweep_dir"
read -r -a per_job <<< "${MNIST_HPC_SWEEP_SBATCH:-}"
export MNIST_HPC_ARGS=${MNIST_HPC_ARGS:---model cnn --synthetic} MNIST_HPC_RUN_DIR=$sweep_dir
ids=()
after=()  # MNIST_HPC_SWEEP_SERIAL=1: one job at a time (nodes that share hardware, e.g. an emulated cluster)
for n in "${counts[@]}"; do
  ids+=("$(sbatch --parsable --nodes="$n" "${after[@]}" "${per_job[@]}" --output="$sweep_dir/bench-%j.out" \
    "$here/bench.sbatch")")
  echo "submitted ${n}-node benchmark: job ${ids[-1]}"
  if [ "${MNIST_HPC_SWEEP_SERIAL:-0}" = 1 ]; then after=(--dependency="afterany:${ids[-1]}"); fi
done
setup=${MNIST_HPC_SETUP:-source $(printf '%q' "$PWD/.venv/bin/activate")}
report=$(sbatch --parsable --nodes=1 --ntasks=1 --job-name=mnist-report --output="$sweep_dir/report-%j.out" \
  --dependency="afterany:$(IFS=:; echo "${ids[*]}")" <<SCRIPT
#!/bin/bash
$setup
exec python -m mnist_hpc bench report $(printf '%q' "$sweep_dir")
SCRIPT
)
echo "submitted report: job $report (after ${ids[*]}); results in $sweep_dir"
