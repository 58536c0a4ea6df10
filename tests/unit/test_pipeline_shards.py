"""pipeline.py: padded shards cover each image once with equal steps; the step budget is shared."""

import math

import pytest

from mnist_hpc import distributed, pipeline


@pytest.mark.parametrize("world_size,batch", [(1, 100), (2, 128), (3, 50), (7, 64)])
def test_padded_shards_cover_each_image_once_with_equal_steps(world_size, batch):
    plan = pipeline.shard_plan(55_000, world_size, batch)
    seen = []
    for rank in range(world_size):
        world = distributed.World(rank, world_size, rank, world_size)
        indices, weights = pipeline.epoch_batches(55_000, world, plan, epoch=2, seed=5)
        assert indices.shape == weights.shape == (plan.steps_per_epoch, batch)  # same steps on all ranks
        seen.append(indices[weights == 1.0])
    seen = [i for part in seen for i in part]
    assert len(seen) == 55_000 and len(set(seen)) == 55_000
    assert plan.steps_per_epoch == math.ceil(math.ceil(55_000 / world_size) / batch)


def test_step_budget_is_shared_by_the_ranks():
    from mnist_hpc import models

    plan = pipeline.shard_plan(55_000, 2, 50)  # 27,500 images per rank: 550 steps per epoch
    assert pipeline.step_budget(models.spec("cnn").recipes["seed"], plan, 2) == (19, 10_000)  # 20,000 reference steps / 2
    plan = pipeline.shard_plan(55_000, 1, 128)
    assert pipeline.step_budget(models.spec("cnn").recipes["default"], plan, 1) == (15, 15 * 430)
