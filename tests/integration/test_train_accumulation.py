"""Gradient accumulation in a real 2-rank run: the global batch is ranks x batch x K in metrics.json,
in the learning rate's scaling and in the step budget (tests/integration/test_compiled.py proves the
update itself)."""

from conftest import launch, metrics_of


def test_global_batch_learning_rate_and_epochs_count_ranks_x_batch_x_k(tmp_path, mnist_dir):
    """The seed recipe (SGD 0.5 at batch 100, constant after a 1-epoch warm-up) at 2 ranks x 50 x K=4:
    global batch 400, so the rate at the end of the warm-up is 0.5 x 400 / 100. Epoch 2 is a resume:
    optimizer.iterations (backward passes) restarts at a whole number of updates."""
    run_dir = tmp_path / "accumulated"
    common = ["train", "--model", "simple", "--recipe", "seed", "--batch-size", "50", "--backward-passes-per-step", "4",
              "--out", str(run_dir), "--data-dir", str(mnist_dir)]
    launch(2, *common, "--epochs", "1")
    assert "resumed from" in launch(2, *common, "--epochs", "2").stdout
    metrics = metrics_of(run_dir)
    assert metrics["global_batch_size"] == 2 * 50 * 4 and metrics["backward_passes_per_step"] == 4
    assert metrics["learning_rate_scale"] == 4.0
    warm, after = metrics["history"]
    assert warm["learning_rate"] < 2.0 and after["learning_rate"] == 2.0  # 0.5 x 400 / 100 once warmed up
    # 27,500 images per rank = 550 batches of 50, rounded up to 138 updates of 4 (2 batches of padding)
    assert [h["steps"] for h in metrics["history"]] == [138, 138] and metrics["steps"] == 276
    assert [h["images"] for h in metrics["history"]] == [55_000, 55_000]  # the padding counts for nothing
    assert metrics["test_accuracy"] >= 0.9 and len(set(metrics["rank_weight_digests"])) == 1


def test_a_step_budget_counts_updates_of_the_global_batch(tmp_path, mnist_dir):
    """1,000 reference steps (world size 1, no accumulation) on 2 ranks x K=4: 125 updates."""
    run_dir = tmp_path / "budget"
    launch(2, "train", "--model", "simple", "--recipe", "seed", "--steps", "1000", "--batch-size", "50",
           "--backward-passes-per-step", "4", "--out", str(run_dir), "--data-dir", str(mnist_dir))
    metrics = metrics_of(run_dir)
    assert metrics["steps"] == 125 and [h["steps"] for h in metrics["history"]] == [125]
    assert metrics["history"][0]["images"] == 125 * 400 and metrics["status"] == "completed"
