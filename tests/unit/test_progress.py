"""progress.py without ranks or a cluster: the ETA arithmetic, the epoch line, and the job-state
printer driven by fake jobs with scripted states (the real SLURM path: tests/slurm/test_submit.py)."""

from __future__ import annotations

import pytest

from mnist_hpc import progress


def record(epoch: int, seconds: float, steps: int = 100, **extra) -> dict:
    return {"epoch": epoch, "seconds": seconds, "steps": steps, "images_per_second": 12345.6, "loss": 0.12345,
            "val_accuracy": 0.98765, **extra}


@pytest.mark.parametrize("seconds,text", [(0, "0 s"), (0.4, "0 s"), (42.4, "42 s"), (59.6, "1 m 00 s"), (65, "1 m 05 s"),
                                          (3599, "59 m 59 s"), (3600, "1 h 00 m"), (7620, "2 h 07 m"), (-3, "0 s")])
def test_duration_reads_as_a_person_reads_it(seconds, text):
    assert progress.duration(seconds) == text


def test_eta_is_the_remaining_steps_at_the_median_step_time():
    # 1 s/step, then a slow first epoch (tracing) that the median ignores, then 1 s/step again
    history = [record(1, 30.0, steps=10), record(2, 10.0, steps=10), record(3, 11.0, steps=10)]
    assert progress.eta_seconds(history, first_epoch=0, remaining_steps=20) == pytest.approx(22.0)  # median 1.1 s
    assert progress.eta_seconds(history, first_epoch=0, remaining_steps=0) == 0


def test_eta_after_a_resume_uses_only_the_epochs_this_run_trained():
    """Epochs 1-2 come from the checkpoint (another run, maybe another world size): not this run's speed."""
    history = [record(1, 500.0), record(2, 500.0), record(3, 20.0)]
    assert progress.eta_seconds(history, first_epoch=2, remaining_steps=300) == pytest.approx(60.0)
    assert progress.eta_seconds(history[:2], first_epoch=2, remaining_steps=300) is None  # nothing timed yet


def test_eta_counts_a_step_budgets_short_last_epoch_for_what_it_is():
    """--steps 250 at 100 steps per epoch: 50 steps after two full epochs take half an epoch's time."""
    history = [record(1, 10.0, steps=100), record(2, 10.0, steps=100)]
    assert progress.eta_seconds(history, first_epoch=0, remaining_steps=250 - 200) == pytest.approx(5.0)


def test_epoch_line_holds_epoch_speed_loss_validation_accuracy_and_eta():
    line = progress.epoch_line(record(3, 10.0), epochs=15, eta=65.2)
    assert line == "epoch 3/15: 12,346 images/s, loss 0.1235, val accuracy 0.9877, ETA 1 m 05 s"
    assert progress.epoch_line(record(1, 10.0), epochs=1, eta=None).endswith("ETA unknown")


# ------------------------------------------------------------------ job states
class FakeJob:
    """A submitit job whose state follows a script, one entry per read; done once the script says so."""

    def __init__(self, job_id: str, states: list[str], done_from: int):
        self.job_id, self.states, self.done_from, self.reads = job_id, states, done_from, 0

    @property
    def state(self) -> str:
        self.reads += 1
        return self.states[min(self.reads, len(self.states)) - 1]

    def done(self) -> bool:
        return self.reads >= self.done_from


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def watched(jobs, timeout=1000.0, **options):
    clock, said, order = FakeClock(), [], []
    for job in progress.watch(jobs, timeout, say=said.append, refresh=lambda jobs: None, clock=clock,
                              sleep=clock.sleep, **options):
        said.append(f"yielded {job.job_id}")
        order.append(job.job_id)
    return said, order


def test_each_state_change_is_said_once_as_it_is_seen_with_its_elapsed_time():
    job = FakeJob("42", ["PENDING", "PENDING", "RUNNING", "RUNNING", "RUNNING", "COMPLETED"], done_from=6)
    said, _ = watched([job], poll_seconds=5)
    assert said == ["job 42: PENDING after 0 s", "job 42: PENDING -> RUNNING after 10 s",
                    "job 42: RUNNING -> COMPLETED after 25 s", "yielded 42"]


def test_a_finished_job_is_yielded_once_its_final_state_is_said():
    """The result file can appear while SLURM still says RUNNING/COMPLETING: wait for the final state."""
    job = FakeJob("7", ["RUNNING", "COMPLETING", "COMPLETING", "FAILED"], done_from=2)
    said, _ = watched([job], poll_seconds=2)
    assert said[-2:] == ["job 7: COMPLETING -> FAILED after 6 s", "yielded 7"]


def test_a_state_that_never_settles_still_yields_the_finished_job():
    job = FakeJob("8", ["RUNNING", "UNKNOWN"], done_from=2)  # e.g. sacct unreachable
    said, order = watched([job], poll_seconds=5, settle_seconds=30)
    assert order == ["8"] and said[-1] == "yielded 8" and "job 8: RUNNING -> UNKNOWN after 5 s" in said


def test_several_jobs_come_back_in_the_order_they_finish_with_their_labels():
    slow = FakeJob("1", ["PENDING", "RUNNING", "RUNNING", "RUNNING", "COMPLETED"], done_from=5)
    fast = FakeJob("2", ["RUNNING", "CANCELLED by 0"], done_from=2)
    said, order = watched([slow, fast], labels={"1": "1-node job 1", "2": "2-node job 2"}, poll_seconds=1)
    assert order == ["2", "1"]
    assert said[:4] == ["1-node job 1: PENDING after 0 s", "2-node job 2: RUNNING after 0 s",
                        "1-node job 1: PENDING -> RUNNING after 1 s", "2-node job 2: RUNNING -> CANCELLED by 0 after 1 s"]


def test_a_job_not_finished_in_time_raises_timeout_after_saying_its_states():
    job = FakeJob("9", ["PENDING", "RUNNING"], done_from=10**9)
    with pytest.raises(TimeoutError, match="1 job"):
        watched([job], timeout=60, poll_seconds=5)


@pytest.mark.parametrize("state,final", [("COMPLETED", True), ("FAILED", True), ("CANCELLED by 0", True),
                                         ("FINISHED", True), ("TIMEOUT", True), ("RUNNING", False),
                                         ("PENDING", False), ("REQUEUED", False), ("COMPLETING", False),
                                         ("UNKNOWN", False), ("", False)])
def test_final_states(state, final):
    assert progress.is_final(state) is final
