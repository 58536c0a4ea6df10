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


@pytest.mark.parametrize("world_size,batch,passes", [(2, 128, 4), (2, 1024, 8), (3, 50, 7), (1, 6875, 8)])
def test_accumulation_epochs_are_whole_updates_padded_with_weight_zero(world_size, batch, passes):
    plan = pipeline.shard_plan(55_000, world_size, batch, passes)
    batches = math.ceil(math.ceil(55_000 / world_size) / batch)
    assert plan.steps_per_epoch % passes == 0 and batches <= plan.steps_per_epoch < batches + passes
    assert plan.updates_per_epoch == plan.steps_per_epoch // passes == math.ceil(batches / passes)
    assert plan.global_batch(world_size) == world_size * batch * passes
    seen = []
    for rank in range(world_size):
        indices, weights = pipeline.epoch_batches(55_000, distributed.World(rank, world_size, rank, world_size), plan,
                                                  epoch=1, seed=3)
        assert indices.shape == (plan.steps_per_epoch, batch)
        seen += list(indices[weights == 1.0])
    assert sorted(seen) == list(range(55_000))  # the rounding up added only weight-0 padding


def test_step_budget_counts_updates_shared_by_ranks_and_passes():
    from mnist_hpc import models

    seed = models.spec("cnn").recipes["seed"]  # 20,000 updates of 50 images at world size 1
    plan = pipeline.shard_plan(55_000, 2, 50, 4)  # 550 batches per epoch = 137.5 updates: rounded to 138
    assert plan.steps_per_epoch == 552
    # 2 ranks x 4 passes share the budget: 2,500 updates of 8 x 50 images, i.e. 10,000 passes per rank
    assert pipeline.step_budget(seed, plan, 2) == (math.ceil(10_000 / 552), 10_000)
    plan = pipeline.shard_plan(55_000, 2, 128, 4)
    assert pipeline.step_budget(models.spec("cnn").recipes["default"], plan, 2) == (15, 15 * 216)


def test_evaluation_interval_is_whole_updates():
    plan = pipeline.shard_plan(55_000, 2, 128, 4)  # 215 batches -> 216 = 54 updates
    assert pipeline.evaluation_interval(plan, 0.25) == round(0.25 * 54) * 4 == 56
    assert pipeline.evaluation_interval(plan, 1.0) == plan.steps_per_epoch
    few = pipeline.shard_plan(55_000, 2, 1024, 8)  # 27 batches -> 32 = 4 updates per epoch
    assert pipeline.evaluation_interval(few, 0.1) == 8  # at least one update


def test_a_batch_whose_passes_exceed_the_shard_is_lowered(capsys):
    from mnist_hpc import models

    recipe = models.Recipe("sgd", 0.1, 10_000)
    world = distributed.World(0, 2, 0, 2)
    assert pipeline.fit_batch_to_shard(recipe, 55_000, world, 2).batch_size == 10_000  # 20,000 fit in 27,500
    assert pipeline.fit_batch_to_shard(recipe, 55_000, world, 3).batch_size == 9167  # 30,000 do not: ceil(27,500 / 3)
    lowered = pipeline.fit_batch_to_shard(recipe, 55_000, world, 4)
    assert lowered.batch_size == 6875 and pipeline.shard_plan(55_000, 2, 6875, 4).updates_per_epoch == 1
    assert "x --backward-passes-per-step 4 is more than each rank's shard of 27500" in capsys.readouterr().err
