"""compiled.py: the learning-rate schedule (Keras's CosineDecay) with warm-up and world-size scaling."""


import pytest

from mnist_hpc import compiled


def test_learning_rate_warms_up_to_the_scaled_rate_then_decays():
    schedule = compiled.learning_rate_schedule(1e-3, scale=4, warmup_steps=100, total_steps=1100, schedule="cosine")
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(2.5e-3)
    assert float(schedule(100)) == pytest.approx(4e-3)
    assert float(schedule(600)) == pytest.approx(2e-3, rel=1e-4)  # half-way down the cosine
    assert float(schedule(1100)) == pytest.approx(0.0, abs=1e-9)


def test_learning_rate_without_scaling_or_warmup():
    schedule = compiled.learning_rate_schedule(0.5, scale=1, warmup_steps=100, total_steps=1000, schedule="constant")
    assert [float(schedule(s)) for s in (0, 50, 999)] == [0.5, 0.5, 0.5]




def test_the_large_batch_recipe_scales_the_rate_by_the_square_root_of_the_global_batch():
    """Its rule: global batch 4,096 over the recipe's 128 is 32, so the rate grows by sqrt(32), not 32."""
    from mnist_hpc import config, pipeline

    plan = pipeline.shard_plan(55_000, 2, 1024, 2)  # 2 ranks x 1,024 x K=2
    large = config.TrainConfig(model="cnn", recipe="large-batch")
    assert compiled.lr_scale(large, plan, 2) == pytest.approx(32 ** 0.5)
    assert compiled.lr_scale(config.TrainConfig(model="cnn"), plan, 2) == 32  # the default recipe: linear
    assert compiled.lr_scale(config.TrainConfig(model="cnn", recipe="large-batch", scale_lr=False), plan, 2) == 1


def test_learning_rate_scales_with_the_global_batch_over_the_recipes_batch():
    from mnist_hpc import config, pipeline

    plan = pipeline.shard_plan(55_000, 2, 128, 4)  # the default CNN recipe's batch 128: global batch 1,024
    cnn = config.TrainConfig(model="cnn")
    assert compiled.lr_scale(cnn, plan, 2) == 2 * 128 * 4 / 128 == 8
    assert compiled.lr_scale(cnn, pipeline.shard_plan(55_000, 2, 512), 2) == 8  # the same global batch, K=1
    assert compiled.lr_scale(config.TrainConfig(model="cnn", scale_lr=False), plan, 2) == 1
    assert compiled.lr_scale(cnn, pipeline.shard_plan(55_000, 1, 32), 1) == 0.25  # smaller than the recipe's
    schedule = compiled.learning_rate_schedule(1e-3, 8, warmup_steps=54, total_steps=15 * 216, schedule="cosine")
    assert float(schedule(54)) == pytest.approx(8e-3)  # the end of the warm-up: base x global batch / 128
    assert float(compiled.learning_rate_schedule(1e-3, 0.25, 54, 1000, "constant")(0)) == pytest.approx(2.5e-4)
