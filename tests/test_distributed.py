"""GPU pinning, thread layout and schedule logic, tested without GPUs or MPI."""

import math

import pytest

from mnist_hpc import distributed, train


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


def test_threads_split_an_unbound_node():
    assert distributed.cpus_per_rank(2, {}, {0, 1}, 2) == 1
    assert distributed.cpus_per_rank(4, {}, set(range(16)), 16) == 4
    assert distributed.cpus_per_rank(8, {}, {0, 1}, 2) == 1  # never zero


def test_horovod_knobs_become_environment():
    knobs = distributed.HorovodKnobs(fusion_threshold_mb=32, cycle_time_ms=2.5, timeline="/tmp/t.json")
    assert knobs.environment() == {"HOROVOD_FUSION_THRESHOLD": str(32 * 1024 * 1024),
                                   "HOROVOD_CYCLE_TIME": "2.5", "HOROVOD_TIMELINE": "/tmp/t.json"}
    assert distributed.HorovodKnobs().environment() == {}


def test_learning_rate_warms_up_to_the_scaled_rate_then_decays():
    schedule = train.learning_rate_schedule(1e-3, world_size=4, scale=True, warmup_steps=100,
                                            total_steps=1100, schedule="cosine")
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(2.5e-3)
    assert float(schedule(100)) == pytest.approx(4e-3)
    assert float(schedule(600)) == pytest.approx(2e-3, rel=1e-4)  # half-way down the cosine
    assert float(schedule(1100)) == pytest.approx(0.0, abs=1e-9)


def test_learning_rate_without_scaling_or_warmup():
    schedule = train.learning_rate_schedule(0.5, world_size=4, scale=False, warmup_steps=100,
                                            total_steps=1000, schedule="constant")
    assert [float(schedule(s)) for s in (0, 50, 999)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("world_size,batch", [(1, 100), (2, 128), (3, 50), (7, 64)])
def test_padded_shards_cover_each_image_once_with_equal_steps(world_size, batch):
    plan = train.shard_plan(55_000, world_size, batch)
    seen = []
    for rank in range(world_size):
        world = distributed.World(rank, world_size, rank, world_size)
        indices, weights = train.epoch_batches(55_000, world, plan, epoch=2, seed=5)
        assert indices.shape == weights.shape == (plan.steps_per_epoch, batch)  # same steps on all ranks
        seen.append(indices[weights == 1.0])
    seen = [i for part in seen for i in part]
    assert len(seen) == 55_000 and len(set(seen)) == 55_000
    assert plan.steps_per_epoch == math.ceil(math.ceil(55_000 / world_size) / batch)


CPU_FLAGS = "flags : fpu avx2 avx512f {}"


def test_precision_auto():
    assert train.choose_precision("auto", None, CPU_FLAGS.format("avx512_bf16")) == "bf16"
    assert train.choose_precision("auto", None, CPU_FLAGS.format("amx_bf16")) == "bf16"
    assert train.choose_precision("auto", None, CPU_FLAGS.format("")) == "fp32"
    assert train.choose_precision("auto", (8, 0)) == "bf16"
    assert train.choose_precision("auto", (7, 0)) == "fp16"
    assert train.choose_precision("fp32", (8, 0)) == "fp32"


def test_step_budget_is_shared_by_the_ranks():
    from mnist_hpc.config import RECIPES

    plan = train.shard_plan(55_000, 2, 50)  # 27,500 images per rank: 550 steps per epoch
    assert train.step_budget(RECIPES[("cnn", "seed")], plan, 2) == (19, 10_000)  # 20,000 reference steps / 2
    plan = train.shard_plan(55_000, 1, 128)
    assert train.step_budget(RECIPES[("cnn", "default")], plan, 1) == (15, 15 * 430)


def test_cpu_ranks_yield_their_cores_unless_told_otherwise():
    assert distributed.cpu_rank_environment(0, {}) == {"HOROVOD_CYCLE_TIME": "5",
                                                       "OMPI_MCA_mpi_yield_when_idle": "1"}
    assert distributed.cpu_rank_environment(0, {}, 0.2)["HOROVOD_CYCLE_TIME"] == "0.2"
    assert distributed.cpu_rank_environment(0, {"HOROVOD_CYCLE_TIME": "1"}) == {"OMPI_MCA_mpi_yield_when_idle": "1"}
    assert distributed.cpu_rank_environment(4, {}) == {}  # GPU ranks keep Horovod's and MPI's defaults


def test_resume_point_redoes_an_epoch_cut_short_by_a_step_budget():
    history = [{"epoch": 1, "steps": 430}, {"epoch": 2, "steps": 60}]
    assert train.resume_point({"epoch": 2, "partial": True, "history": history}) == (1, history[:1])
    assert train.resume_point({"epoch": 2, "partial": False, "history": history}) == (2, history)
    assert train.resume_point(None) == (0, [])
