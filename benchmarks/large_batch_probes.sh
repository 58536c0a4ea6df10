#!/bin/bash
# Issue 19: the probes that chose the CNN's `large-batch` recipe (benchmarks/RESULTS.md, "A large-batch recipe").
# Global batch 4,096 (2 ranks x 1,024 x K=2), seed 42, the cosine ending at the 12-epoch cap, stopping at 99.25%.
# With the default recipe's linear rule the peak rate is --lr x 32 (4,096 / its batch 128), reached by a linear
# warm-up from --lr; the first probe fixes the rate instead (--no-scale-lr: no warm-up either).
# Each probe: benchmarks/results/large-batch/NAME/ (tta.md, tta.json, the trial's metrics.json and log).
PROBES=large-batch
# shellcheck source=benchmarks/probes.sh
source "$(dirname "${BASH_SOURCE[0]}")/probes.sh"
probe 4096 adam-sqrt-w2-e12 12 --no-scale-lr --lr 0.0057 --warmup-epochs 2   # 1e-3 x sqrt(32), from step 0
probe 4096 adam-peak4e-3-w2-e12 12 --lr 0.000125 --warmup-epochs 2
probe 4096 adam-peak8e-3-w3-e12 12 --lr 0.00025 --warmup-epochs 3
probe 4096 adam-peak2e-3-w1-e12 12 --lr 0.0000625 --warmup-epochs 1
probe 4096 adam-peak4e-3-w2-e12-aug1 12 --lr 0.000125 --warmup-epochs 2 --augment 1
probe 4096 adam-peak4e-3-w2-e12-aug0 12 --lr 0.000125 --warmup-epochs 2 --augment 0
