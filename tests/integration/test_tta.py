"""The time-to-accuracy study on a tiny budget, with real ranks: 2 global batches x 1 seed of the
softmax model, 1 epoch at most, the test set every quarter epoch. The report's numbers are those of
the trials' metrics.json, and a second run trains nothing."""

import json
import subprocess
import sys

from conftest import REPO, metrics_of

TARGET, ALSO = 0.9, 0.85


def study(out, mnist_dir, *extra):
    command = [sys.executable, str(REPO / "benchmarks" / "tta_study.py"), "--out", str(out), "--model", "simple",
               "--global-batches", "256", "1024", "--seeds", "7", "--max-batch", "256", "--max-epochs", "1",
               "--target-accuracy", str(TARGET), "--also-accuracy", str(ALSO), *extra,
               "--", "--data-dir", str(mnist_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def first(evaluations, accuracy):
    hit = next((e for e in evaluations if e["test_accuracy"] >= accuracy), None)
    return {k: hit[k] for k in ("epochs", "updates", "images")} if hit else None


def test_study_runs_each_trial_once_and_reports_its_metrics(tmp_path, mnist_dir):
    out = tmp_path / "study"
    study(out, mnist_dir)
    summary = json.loads((out / "tta.json").read_text())
    rows = {row["global_batch"]: row for row in summary["trials"]}
    assert sorted(rows) == [256, 1024]
    for global_batch, (batch, passes) in {256: (128, 1), 1024: (256, 2)}.items():
        metrics = metrics_of(out / f"gb{global_batch}-seed7")
        assert metrics["global_batch_size"] == global_batch and metrics["backward_passes_per_step"] == passes
        evaluations = metrics["test_evaluations"]
        # every quarter epoch (in whole updates), until the target or the end of the epoch
        assert [round(e["epochs"] * 4) for e in evaluations] == list(range(1, len(evaluations) + 1))
        row = rows[global_batch]
        assert (row["batch"], row["passes"], row["status"]) == (batch, passes, "completed")
        assert row["target"] == first(evaluations, TARGET) and row["also"] == first(evaluations, ALSO)
        assert row["final_test_accuracy"] == metrics["test_accuracy"]
        if row["target"]:  # the run stopped at the evaluation that reached the target
            before = [e["test_accuracy"] for e in evaluations[:-1]]
            assert evaluations[-1]["test_accuracy"] >= TARGET > max(before, default=0)
            assert metrics["time_to_target"]["images"] == row["target"]["images"]
    table = (out / "tta.md").read_text()
    assert table.count("| 256 | 2 x 128 x 1 | 7 |") == 1 and table.count("| 1024 | 2 x 256 x 2 | 7 |") == 1
    assert (out / "tta.png").is_file()

    again = study(out, mnist_dir)  # resumable: both trials are finished, nothing trains
    assert again.stdout.count("finished before, skipped") == 2
    assert json.loads((out / "tta.json").read_text()) == summary

    # an interrupted trial (as a signal leaves it: metrics.json says interrupted, its checkpoints kept)
    # is resumed from its checkpoint by the next run of the study, not restarted; the finished one is skipped
    victim = out / "gb1024-seed7"
    interrupted = metrics_of(victim) | {"status": "interrupted"}
    (victim / "metrics.json").write_text(json.dumps(interrupted))
    resumed = study(out, mnist_dir)
    assert resumed.stdout.count("finished before, skipped") == 1 and "gb1024-seed7: 2 ranks" in resumed.stdout
    log = (out / "gb1024-seed7.log").read_text()
    assert log.count("resumed from") == 1, log[-3000:]
    after = metrics_of(victim)
    assert after["status"] == "completed" and [h["epoch"] for h in after["history"]] == [1]
