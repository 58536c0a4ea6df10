#!/usr/bin/env bash
# run.sh - the measurements behind benchmarks/RESULTS.md, run one after another on an idle machine.
#   bash benchmarks/run.sh [GROUP ...]
# groups: stacks stack-recipes redesign-recipes plots plain recipes peak baseline sweep strong allreduce slurm tta cnn-default cnn-seed cnn-default-bf16 bf16
# Results (metrics.json / bench JSON) are copied to benchmarks/results/<name>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TF_CPP_MIN_LOG_LEVEL=2
export MNIST_HPC_DATA=${MNIST_HPC_DATA:-$(cd .. && pwd)/shared/data/mnist}
PY=.venv/bin/python
RUNS=${RUNS:-/tmp/mnist-hpc-bench}
OUT=benchmarks/results
REPEATS=${REPEATS:-3}
mkdir -p "$RUNS" "$OUT"
local2() { $PY launchers/local.py --np 2 "$@"; }
train() {  # NAME ARGS...: 2-rank training, metrics copied to results
  local name=$1; shift
  local2 train "$@" --out "$RUNS/$name" --resume never > "$RUNS/$name.log" 2>&1
  cp "$RUNS/$name/metrics.json" "$OUT/$name.json"
  echo "$name: $(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"test {m['test_accuracy']:.4f}, training {m['wall_seconds']:.1f} s, start-up {m['startup_seconds']:.1f} s, time_to_target {m.get('time_to_target')}\")" "$OUT/$name.json")"
}
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(plain recipes peak baseline sweep strong allreduce slurm tta cnn-default cnn-seed cnn-default-bf16 bf16)
for group in "${groups[@]}"; do
  case $group in
    plain)  # issue 7's bar: plain tf.keras, one process, the issue's recipes (no mnist-hpc training code)
      for i in $(seq "$REPEATS"); do
        $PY benchmarks/plain_keras.py --model simple > "$RUNS/plain-simple-$i.log" --out "$OUT/plain-simple-$i.json"
      done
      $PY benchmarks/plain_keras.py --model cnn --precision fp32 --out "$OUT/plain-cnn-fp32.json" > "$RUNS/plain-cnn-fp32.log"
      $PY benchmarks/plain_keras.py --model cnn --precision bf16 --out "$OUT/plain-cnn-bf16.json" > "$RUNS/plain-cnn-bf16.log" ;;
    recipes)
      for i in $(seq "$REPEATS"); do
        train "simple-seed-np2-$i" --model simple --recipe seed
        train "simple-default-np2-$i" --model simple --recipe default
      done ;;
    peak)
      for i in $(seq "$REPEATS"); do $PY -m mnist_hpc bench peak --out "$OUT/peak-$i.json" > /dev/null; done ;;
    baseline)  # Horovod (1 process) vs plain tf.keras, same model and batch, same process
      for i in $(seq "$REPEATS"); do
        $PY -m mnist_hpc bench throughput --model cnn --batch-size 128 --compare-plain --out "$OUT/baseline-cnn-$i.json" > /dev/null
      done ;;
    sweep)  # 1 and 2 ranks, 128 images per rank (weak scaling)
      for i in $(seq "$REPEATS"); do
        local2 --out "$RUNS/sweep-$i" sweep -- --model cnn --batch-size 128 > "$RUNS/sweep-$i.log" 2>&1
        cp "$RUNS/sweep-$i/report.json" "$OUT/sweep-cnn-$i.json"
      done ;;
    strong)  # 1 and 2 ranks sharing a global batch of 256, against plain tf.keras at 256 in the same sweep
      for precision in fp32 bf16; do
        for i in $(seq "$REPEATS"); do
          local2 --global-batch 256 --out "$RUNS/strong-$precision-$i" sweep -- --model cnn --precision "$precision" \
            > "$RUNS/strong-$precision-$i.log" 2>&1
          cp "$RUNS/strong-$precision-$i/report.json" "$OUT/strong-cnn-$precision-$i.json"
        done
      done ;;
    allreduce)  # the CNN's 13.1 MB gradient all-reduce between 2 local ranks, and 1-core compute per step
      for i in $(seq "$REPEATS"); do
        local2 bench allreduce --out "$OUT/allreduce-np2-$i.json" > /dev/null
        $PY -m mnist_hpc bench throughput --model cnn --batch-size 128 --threads 1 --out "$OUT/cnn-1thread-$i.json" > /dev/null
      done ;;
    slurm)  # the sweep at 1 and 2 nodes of the local SLURM cluster (both "nodes" share this machine's 2 cores)
      tests/slurm/cluster.sh start > /dev/null
      eval "$(tests/slurm/cluster.sh env)"
      for i in $(seq "$REPEATS"); do
        dir=$RUNS/slurm-sweep-$i
        rm -rf "$dir"
        MNIST_HPC_SWEEP_DIR=$dir MNIST_HPC_ARGS="--model cnn --batch-size 128" MNIST_HPC_SWEEP_SERIAL=1 \
          MNIST_HPC_SETUP="source $PWD/.venv/bin/activate" slurm/scaling_sweep.sh 1 2 > "$dir.log"
        report=$(sed -n 's/^submitted report: job \([0-9]*\).*/\1/p' "$dir.log")
        while [ -n "$(squeue -h -t PD,R,CG -j "$report" 2>/dev/null)" ]; do sleep 2; done
        cp "$dir/report.json" "$OUT/slurm-sweep-cnn-$i.json"
        cp "$dir/np2.json" "$OUT/slurm-np2-cnn-$i.json"
      done ;;
    tta)  # the default recipe on a 4-epoch schedule with 1-pixel shifts, stopped at 99.25% test accuracy
      for i in $(seq "$REPEATS"); do
        train "cnn-tta-9925-np2-$i" --model cnn --epochs 4 --augment 1 --target-accuracy 0.9925
      done ;;
    cnn-default) train cnn-default-fp32-np2 --model cnn --precision fp32 ;;
    cnn-seed) train cnn-seed-np2 --model cnn --recipe seed --precision fp32 ;;
    cnn-default-bf16) train cnn-default-bf16-np2 --model cnn --precision bf16 ;;
    bf16)
      for i in $(seq "$REPEATS"); do
        $PY -m mnist_hpc bench throughput --model cnn --batch-size 128 --precision bf16 --out "$OUT/bf16-cnn-$i.json" > /dev/null
      done ;;
    stacks)  # issue 11: fallback (tf2.15, .venv-tf2.15) vs default stack (.venv), interleaved in one sitting:
      # plain tf.keras CNN throughput fp32 and bf16 (one process, --compare-plain) and 2-rank CNN training
      for i in $(seq "$REPEATS"); do
        for stack in tf2.15 default; do
          venv=.venv; [ "$stack" = default ] || venv=.venv-$stack
          for precision in fp32 bf16; do
            $venv/bin/python -m mnist_hpc bench throughput --model cnn --batch-size 128 --precision "$precision" \
              --compare-plain --out "$OUT/stack-$stack-plain-$precision-$i.json" > /dev/null
          done
          PY=$venv/bin/python train "stack-$stack-cnn-np2-$i" --model cnn --epochs 2
        done
      done ;;
    stack-recipes)  # issue 11: the four recipes' accuracy on the default stack (2 ranks)
      train stack-default-simple-seed-np2 --model simple --recipe seed
      train stack-default-simple-default-np2 --model simple --recipe default
      train stack-default-cnn-default-np2 --model cnn
      train stack-default-cnn-seed-np2 --model cnn --recipe seed --precision fp32 ;;
    plots)  # the committed sweep reports as PNG plots (benchmarks/plots/)
      $PY benchmarks/plots.py ;;
    redesign-recipes)  # issue 14: the same four recipes after the redesign (Keras's CosineDecay, one compiled model)
      train redesign-simple-seed-np2 --model simple --recipe seed
      train redesign-simple-default-np2 --model simple --recipe default
      train redesign-cnn-default-np2 --model cnn
      train redesign-cnn-seed-np2 --model cnn --recipe seed --precision fp32 ;;
    *) echo "unknown group $group" >&2; exit 2 ;;
  esac
done
