"""``python -m mnist_hpc``."""

import sys

from .cli import main

sys.exit(main())
