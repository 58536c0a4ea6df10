"""The stop request: SIGTERM or SIGUSR1 (SLURM's warning signal, preemption) asks the ranks to finish
the current epoch, checkpoint and exit with INTERRUPTED_EXIT (75) so the job can be requeued.

Installed by `mnist-hpc train` before TensorFlow is imported (seconds of start-up during which the
default action would kill the rank); the epoch-end callback reads it and all ranks agree on it.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Records the first stop signal; nothing else happens in the handler."""

    def __init__(self) -> None:
        self.received: int | None = None
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum
