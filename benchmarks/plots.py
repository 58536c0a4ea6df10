#!/usr/bin/env python3
"""The committed sweep reports (benchmarks/results/*.json rows) as the PNG plots `bench report` draws.

    .venv/bin/python benchmarks/plots.py     # -> benchmarks/plots/<sweep>-{throughput,efficiency}.png

Of each sweep's repeats, the one with the median efficiency at the largest worker count is drawn.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mnist_hpc import bench  # noqa: E402 - after the path: run from a checkout

SWEEPS = {  # name: (result files, title)
    "sweep-cnn": ("sweep-cnn-[0-9].json", "CNN fp32, weak scaling, batch 128 per rank, local ranks"),
    "strong-cnn-fp32": ("strong-cnn-fp32-[0-9].json", "CNN fp32, strong scaling, global batch 256"),
    "strong-cnn-bf16": ("strong-cnn-bf16-[0-9].json", "CNN bf16, strong scaling, global batch 256"),
    "slurm-sweep-cnn": ("slurm-sweep-cnn-[0-9].json", "CNN fp32, weak scaling, one rank per SLURM node"),
}


def main() -> int:
    out = HERE / "plots"
    out.mkdir(exist_ok=True)
    for name, (pattern, title) in SWEEPS.items():
        runs = [json.loads(path.read_text()) for path in sorted((HERE / "results").glob(pattern))]
        if not runs:
            print(f"{name}: no results matching {pattern}", file=sys.stderr)
            return 1
        median = statistics.median_low(run[-1]["efficiency"] for run in runs)
        rows = next(run for run in runs if run[-1]["efficiency"] == median)
        for path in bench.plot(rows, out, prefix=f"{name}-", title=f"{title} (median of {len(runs)})"):
            print(path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
