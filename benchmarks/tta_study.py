#!/usr/bin/env python3
"""The time-to-accuracy study (issue 19 part 3): one 2-rank training per global batch and seed, then
a Markdown table, a JSON summary and a plot (mnist_hpc/tta.py). Resumable: run it again to go on.

    .venv/bin/python benchmarks/tta_study.py --out benchmarks/results/tta -- --precision bf16
    .venv/bin/python benchmarks/tta_study.py --out benchmarks/results/tta --report-only
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mnist_hpc import tta  # noqa: E402 - after the path: run from a checkout

if __name__ == "__main__":
    sys.exit(tta.main())
