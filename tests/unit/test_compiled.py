"""compiled.py: the learning-rate schedule (Keras's CosineDecay) with warm-up and world-size scaling."""


import pytest

from mnist_hpc import compiled


def test_learning_rate_warms_up_to_the_scaled_rate_then_decays():
    schedule = compiled.learning_rate_schedule(1e-3, world_size=4, scale=True, warmup_steps=100,
                                            total_steps=1100, schedule="cosine")
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(2.5e-3)
    assert float(schedule(100)) == pytest.approx(4e-3)
    assert float(schedule(600)) == pytest.approx(2e-3, rel=1e-4)  # half-way down the cosine
    assert float(schedule(1100)) == pytest.approx(0.0, abs=1e-9)


def test_learning_rate_without_scaling_or_warmup():
    schedule = compiled.learning_rate_schedule(0.5, world_size=4, scale=False, warmup_steps=100,
                                            total_steps=1000, schedule="constant")
    assert [float(schedule(s)) for s in (0, 50, 999)] == [0.5, 0.5, 0.5]


