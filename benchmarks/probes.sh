#!/bin/bash
# Sourced by benchmarks/large_batch_probes.sh and small_batch_probes.sh: the environment and `probe`.
# probe GLOBAL_BATCH NAME MAX_EPOCHS TRAIN_ARGS...: one `bench tta` trial, seed 42, stopping at 99.25%, in
# benchmarks/results/$PROBES/NAME/ (tta.md, tta.json, the trial's metrics.json and log).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export MNIST_HPC_DATA=${MNIST_HPC_DATA:-$(cd .. && pwd)/shared/data/mnist} TF_CPP_MIN_LOG_LEVEL=2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
probe() {
  local batch=$1 name=$2 epochs=$3; shift 3
  .venv/bin/mnist-hpc bench tta --out "benchmarks/results/$PROBES/$name" --global-batches "$batch" --seeds 42 \
    --max-epochs "$epochs" -- --precision auto "$@"
  echo "$name exit $?"
}
# probe_steps NAME UPDATES TRAIN_ARGS...: one 2-rank `train` of the CNN at global batch 256, seed 42, whose schedule
# ends after UPDATES optimizer updates (a fraction of an epoch allowed: 215 updates are one epoch), the test set every
# quarter epoch, stopping at 99.25%; in benchmarks/results/$PROBES/NAME/ (metrics.json, config.toml, train.log).
probe_steps() {
  local name=$1 updates=$2; shift 2
  local out=benchmarks/results/$PROBES/$name
  if [ -f "$out/metrics.json" ]; then echo "$name: finished before, skipped"; return; fi  # resumable, like probe
  mkdir -p "$out"
  .venv/bin/python launchers/local.py --np 2 train --model cnn --seed 42 --batch-size 128 --steps $((2 * updates)) \
    --eval-every 0.25 --target-accuracy 0.9925 --precision auto --out "$out" "$@" > "$out/train.log" 2>&1
  echo "$name exit $?: $(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['time_to_target'], max(e['test_accuracy'] for e in m['test_evaluations']))" "$out/metrics.json")"
}
