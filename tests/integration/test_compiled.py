"""Gradients are averaged across ranks: the ranks stay identical step by step, and 2 ranks with
different batches take exactly the step one process takes on both batches at once. With gradient
accumulation (K backward passes per step), K batches per rank make one update: the step one process
takes on all 2 x K batches at once."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from conftest import REPO
from mnist_hpc.jobspec import JobSpec, launch_environment

STEPS, BATCH = 5, 32
# Runs the training code's own compiled model (DistributedOptimizer and all) for a few updates of K
# backward passes. With N ranks, rank r trains on its own K batches of each update's 2 * K * BATCH
# images; with one process and --together, that process trains on all 2 * K * BATCH at once, in one pass.
# Prints each backward pass's weight digests.
STEPPER = f"""
import sys
import numpy as np
import mnist_hpc
from mnist_hpc import compiled, config, data, distributed, pipeline, train

data_dir, out, k, updates = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
together = "--together" in sys.argv
per_update = 2 * {BATCH} * k  # images of one update over all ranks
batch, passes = (per_update, 1) if together else ({BATCH}, k)
world = distributed.init()
conf = config.TrainConfig(model="simple", recipe="seed", scale_lr=False, data_dir=data_dir,
                          backward_passes_per_step=passes)
recipe = conf.resolved_recipe()  # SGD at a constant rate; --no-scale-lr: the same rate as one process
split = data.load(data_dir, layout="flat").train
plan = pipeline.shard_plan(len(split), world.size, batch, passes)
model = compiled.compile_model(conf, recipe, "fp32", world, plan, updates * passes, steps_per_execution=1)
train.restore(model, None, 0, plan.steps_per_epoch)
for update in range(updates):
    for p in range(passes):
        start = update * per_update + (0 if together else world.rank * passes * batch + p * batch)
        model.train_on_batch(split.images[start:start + batch], split.labels[start:start + batch])
        digests = distributed.gather_object(distributed.weights_digest(model.get_weights()), f"pass{{update}}_{{p}}")
        if world.is_root:
            print("pass", update, p, *digests, flush=True)
if world.is_root:
    np.savez(out, *model.get_weights())
"""


def run_stepper(ranks: int, out, mnist_dir, *flags: str, passes: int = 1, updates: int = STEPS) -> list[list[str]]:
    """Each backward pass's weight digests, one list per pass: [update, pass, digest of rank 0, ...]."""
    command = [sys.executable, "-c", STEPPER, str(mnist_dir), str(out), str(passes), str(updates), *flags]
    if ranks > 1:
        launcher = JobSpec(("doctor",), ntasks_per_node=ranks).mpirun_command()
        command = launcher[:launcher.index(sys.executable)] + command
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=launch_environment(), cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("pass ")]


def assert_same_weights(path_a, path_b) -> None:
    a, b = np.load(path_a), np.load(path_b)
    assert any(np.abs(b[key]).max() > 0 for key in b.files)
    for key in b.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_two_ranks_average_their_gradients_every_step(tmp_path, mnist_dir):
    steps = [digests for _, _, *digests in run_stepper(2, tmp_path / "two.npz", mnist_dir)]
    assert len(steps) == STEPS
    for step, digests in enumerate(steps):
        assert len(digests) == 2 and digests[0] == digests[1], f"ranks hold different weights after step {step}"
    assert len({digests[0] for digests in steps}) == STEPS  # and the weights did change every step

    run_stepper(1, tmp_path / "one.npz", mnist_dir, "--together")
    # the mean of the two ranks' gradients is the gradient of their joint batch
    assert_same_weights(tmp_path / "two.npz", tmp_path / "one.npz")


def test_four_backward_passes_make_the_one_update_of_their_joint_batch(tmp_path, mnist_dir):
    """K=4 on 2 ranks at batch b: one all-reduce and one update per 4 passes, the SGD step that one
    process takes at batch 2 x 4b on the same images (it fails if K is ignored or the 4 are summed)."""
    passes = run_stepper(2, tmp_path / "accumulated.npz", mnist_dir, passes=4, updates=2)
    assert [(int(u), int(p)) for u, p, *_ in passes] == [(u, p) for u in range(2) for p in range(4)]
    for update, p, *digests in passes:
        assert len(digests) == 2 and digests[0] == digests[1], f"ranks differ after pass {p} of update {update}"
    rank0 = [digests[0] for _, _, *digests in passes]
    assert rank0[0] == rank0[1] == rank0[2] != rank0[3]  # the weights move once, at the 4th pass
    assert rank0[4] == rank0[5] == rank0[6] != rank0[7] and rank0[3] == rank0[4]

    run_stepper(1, tmp_path / "joint.npz", mnist_dir, "--together", passes=4, updates=2)
    assert_same_weights(tmp_path / "accumulated.npz", tmp_path / "joint.npz")
