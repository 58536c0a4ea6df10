"""distributed.py: GPU pinning, thread layout and Horovod knobs, tested without GPUs or MPI."""


import pytest

from mnist_hpc import distributed


class FakeConfig:
    """Stands in for tf.config with a list of fake GPUs."""

    def __init__(self, n_gpus):
        self.gpus = [f"GPU:{i}" for i in range(n_gpus)]
        self.growth, self.visible = {}, None
        outer = self

        class experimental:
            @staticmethod
            def set_memory_growth(device, enable):
                outer.growth[device] = enable

        self.experimental = experimental

    def list_physical_devices(self, kind):
        assert kind == "GPU"
        return list(self.gpus)

    def set_visible_devices(self, device, kind):
        self.visible = device


@pytest.mark.parametrize("local_rank", [0, 1, 2, 3])
def test_one_gpu_per_local_rank(local_rank):
    config = FakeConfig(4)
    assert distributed.pin_gpu(local_rank, config) == f"GPU:{local_rank}"
    assert config.visible == f"GPU:{local_rank}"
    assert config.growth == {f"GPU:{i}": True for i in range(4)}  # memory growth on every GPU


def test_scheduler_bound_single_gpu_is_used_by_its_rank():
    config = FakeConfig(1)  # e.g. srun --gpus-per-task=1: each task sees one GPU
    assert distributed.pin_gpu(3, config) == "GPU:0"


def test_no_gpu_means_cpu():
    config = FakeConfig(0)
    assert distributed.pin_gpu(0, config) is None and config.visible is None


def test_more_ranks_than_gpus_is_an_error():
    with pytest.raises(RuntimeError, match="local rank 4 has no GPU of its own: 4 visible"):
        distributed.pin_gpu(4, FakeConfig(4))


def test_threads_follow_slurm_cpus_per_task():
    assert distributed.cpus_per_rank(4, {"SLURM_CPUS_PER_TASK": "6"}, set(range(48)), 48) == 6


def test_threads_follow_a_bound_affinity_mask():
    assert distributed.cpus_per_rank(2, {}, {1}, 2) == 1  # mpirun --bind-to core
    assert distributed.cpus_per_rank(2, {}, {0, 1, 2, 3}, 16) == 4


def test_the_threads_option_wins_over_slurm_and_the_mask(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert distributed.intra_op_threads_for(None, 4) == 6
    assert distributed.intra_op_threads_for(3, 4) == 3  # --threads 3


def test_threads_split_an_unbound_node():
    assert distributed.cpus_per_rank(2, {}, {0, 1}, 2) == 1
    assert distributed.cpus_per_rank(4, {}, set(range(16)), 16) == 4
    assert distributed.cpus_per_rank(8, {}, {0, 1}, 2) == 1  # never zero


def test_horovod_knobs_become_environment():
    knobs = distributed.HorovodKnobs(fusion_threshold_mb=32, cycle_time_ms=2.5, timeline="/tmp/t.json")
    assert knobs.environment() == {"HOROVOD_FUSION_THRESHOLD": str(32 * 1024 * 1024),
                                   "HOROVOD_CYCLE_TIME": "2.5", "HOROVOD_TIMELINE": "/tmp/t.json"}
    assert distributed.HorovodKnobs().environment() == {}


def test_cpu_ranks_yield_their_cores_unless_told_otherwise():
    assert distributed.cpu_rank_environment(0, {}) == {"HOROVOD_CYCLE_TIME": "5",
                                                       "OMPI_MCA_mpi_yield_when_idle": "1"}
    assert distributed.cpu_rank_environment(0, {}, 0.2)["HOROVOD_CYCLE_TIME"] == "0.2"
    assert distributed.cpu_rank_environment(0, {"HOROVOD_CYCLE_TIME": "1"}) == {"OMPI_MCA_mpi_yield_when_idle": "1"}
    assert distributed.cpu_rank_environment(4, {}) == {}  # GPU ranks keep Horovod's and MPI's defaults
