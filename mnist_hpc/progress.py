"""Progress as it happens: rank 0's line per epoch, and the state changes of submitted jobs.

No TensorFlow, no submitit import: callbacks.ProgressLine prints :func:`epoch_line`, and the
submitit launchers (launchers/submit.py --wait, launchers/scaling.py) wait with :func:`watch`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterator, Protocol, Sequence


def duration(seconds: float) -> str:
    """``42 s``, ``3 m 05 s``, ``2 h 07 m``: a wait or an estimate as a person reads it."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} m {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} m"


# ------------------------------------------------------------------ the epoch line
def eta_seconds(history: Sequence[dict[str, Any]], first_epoch: int, remaining_steps: int) -> float | None:
    """Seconds left: the remaining optimizer steps at the median seconds per step of the epochs this
    run trained (those after ``first_epoch``: a resumed run's earlier epochs were timed elsewhere).
    Steps, not epochs, so a step budget's short last epoch counts for what it is. None before any."""
    rates = [h["seconds"] / h["steps"] for h in history if h["epoch"] > first_epoch and h["steps"] > 0]
    if not rates:
        return None
    return max(0, remaining_steps) * statistics.median(rates)


def epoch_line(record: dict[str, Any], epochs: int, eta: float | None) -> str:
    """``epoch 3/15: 41,230 images/s, loss 0.1234, val accuracy 0.9871, ETA 1 m 05 s``."""
    left = "unknown" if eta is None else duration(eta)
    return (f"epoch {record['epoch']}/{epochs}: {record['images_per_second']:,.0f} images/s, "
            f"loss {record['loss']:.4f}, val accuracy {record['val_accuracy']:.4f}, ETA {left}")


# ------------------------------------------------------------------ job states
# what submitit's watcher counts as not finished (core.InfoWatcher.is_done); anything else is final
ACTIVE_STATES = frozenset({"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "CONFIGURING"})


def is_final(state: str) -> bool:
    """COMPLETED, FAILED, "CANCELLED by 0", FINISHED (a local job), ...: the job will not change again."""
    return (state.split() or ["UNKNOWN"])[0] not in ACTIVE_STATES


class Job(Protocol):
    """What :func:`watch` reads of a submitit job."""

    job_id: str

    @property
    def state(self) -> str: ...

    def done(self) -> bool: ...


def refresh_slurm_states(jobs: Sequence[Job]) -> None:
    """One forced ``sacct`` for every SLURM job: submitit's shared watcher would otherwise ask only
    every few minutes on a long job. (A local job reads its process each time.)"""
    import submitit  # the launchers' dependency, not the package's

    watchers = {id(job.watcher): job.watcher for job in jobs if isinstance(job, submitit.SlurmJob)}
    for watcher in watchers.values():
        watcher.update()


def print_line(line: str) -> None:
    print(line, flush=True)


def watch(jobs: Sequence[Job], timeout: float, poll_seconds: float = 5.0, labels: dict[str, str] | None = None,
          say: Callable[[str], None] = print_line, refresh: Callable[[Sequence[Job]], None] = refresh_slurm_states,
          settle_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[Job]:
    """Yield each job as it finishes (like ``submitit.helpers.as_completed``), saying every state
    change as it is seen: ``job 42: PENDING -> RUNNING after 12 s``. A job whose result is there is
    yielded once its state is final (so COMPLETED or FAILED is said first), or ``settle_seconds`` after.
    Raises TimeoutError after ``timeout`` seconds with jobs left."""
    start = clock()
    seen: dict[str, str] = {}
    finished_at: dict[str, float] = {}
    waiting = list(jobs)
    while True:
        refresh(waiting)
        now = clock()
        for job in list(waiting):
            state = job.state
            old = seen.get(job.job_id)
            if state != old:
                seen[job.job_id] = state
                name = (labels or {}).get(job.job_id, f"job {job.job_id}")
                change = state if old is None else f"{old} -> {state}"
                say(f"{name}: {change} after {duration(now - start)}")
            if job.done():
                finished_at.setdefault(job.job_id, now)
                if is_final(state) or now - finished_at[job.job_id] >= settle_seconds:
                    waiting.remove(job)
                    yield job
        if not waiting:
            return
        if clock() - start >= timeout:
            raise TimeoutError(f"{len(waiting)} job(s) not finished after {timeout:.0f} s")
        sleep(poll_seconds)
