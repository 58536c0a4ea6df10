"""The exit statuses of every command, launcher and script: one convention, defined once (no TensorFlow).

    0   OK           the command did its work
    1   FAILED       runtime failure: training diverged, ranks disagree, an OS error writing the run
                     directory, no mirror served the data, a failed acceptance step, a failed job
    2   USAGE        input error, before any MPI/SLURM work: one line ``error: ...``, no usage block
    75  INTERRUPTED  stopped by a signal (SIGTERM, SLURM's USR1) after a checkpoint: requeue to resume
                     (EX_TEMPFAIL of sysexits.h)

A rank killed outright (SIGKILL, out of memory) ends with whatever mpirun or SLURM reports for it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    INTERRUPTED = 75
