"""Gradients are averaged across ranks: the ranks stay identical step by step, and 2 ranks with
different batches take exactly the step one process takes on both batches at once."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from conftest import REPO
from mnist_hpc.jobspec import JobSpec, launch_environment

STEPS, BATCH = 5, 32
# Runs the training code's own compiled model (DistributedOptimizer and all) for a few steps. With
# N ranks, rank r trains on its own slice of each step's 2 * BATCH images; with one process and
# --together, that process trains on all 2 * BATCH at once. Prints each step's weight digests.
STEPPER = f"""
import sys
import numpy as np
import mnist_hpc
from mnist_hpc import compiled, config, data, distributed, pipeline, train

data_dir, out, together = sys.argv[1], sys.argv[2], "--together" in sys.argv
world = distributed.init()
conf = config.TrainConfig(model="simple", recipe="seed", scale_lr=False, data_dir=data_dir)
recipe = conf.resolved_recipe()  # SGD at a constant rate; --no-scale-lr: the same rate as one process
split = data.load(data_dir, layout="flat").train
plan = pipeline.shard_plan(len(split), world.size, {BATCH})
model = compiled.compile_model(conf, recipe, "fp32", world, plan, total_steps={STEPS})
train.restore(model, None, 0, plan.steps_per_epoch)
per_rank = 2 * {BATCH} // (1 if together else world.size)
for step in range({STEPS}):
    start = step * 2 * {BATCH} + world.rank * per_rank
    model.train_on_batch(split.images[start:start + per_rank], split.labels[start:start + per_rank])
    digests = distributed.gather_object(distributed.weights_digest(model.get_weights()), f"step{{step}}")
    if world.is_root:
        print("step", step, *digests, flush=True)
if world.is_root:
    np.savez(out, *model.get_weights())
"""


def run_stepper(ranks: int, out, mnist_dir, *flags: str) -> list[list[str]]:
    command = [sys.executable, "-c", STEPPER, str(mnist_dir), str(out), *flags]
    if ranks > 1:
        launcher = JobSpec(("doctor",), ntasks_per_node=ranks).mpirun_command()
        command = launcher[:launcher.index(sys.executable)] + command
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=launch_environment(), cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return [line.split()[2:] for line in result.stdout.splitlines() if line.startswith("step ")]


def test_two_ranks_average_their_gradients_every_step(tmp_path, mnist_dir):
    steps = run_stepper(2, tmp_path / "two.npz", mnist_dir)
    assert len(steps) == STEPS
    for step, digests in enumerate(steps):
        assert len(digests) == 2 and digests[0] == digests[1], f"ranks hold different weights after step {step}"
    assert len({digests[0] for digests in steps}) == STEPS  # and the weights did change every step

    run_stepper(1, tmp_path / "one.npz", mnist_dir, "--together")
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert any(np.abs(one[key]).max() > 0 for key in one.files)
    for key in one.files:  # the mean of the two ranks' gradients is the gradient of their joint batch
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
