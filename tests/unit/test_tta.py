"""tta.py without ranks: how a global batch is split, the study's settings, and the report's numbers
taken from the trials' metrics.json (tests/integration/test_tta.py runs a real study)."""

import json

import pytest

from conftest import assert_one_line_error
from mnist_hpc import tta


@pytest.mark.parametrize("global_batch,expected", [(256, (128, 1)), (1024, (512, 1)), (4096, (1024, 2)),
                                                    (16384, (1024, 8)), (6000, (1000, 3))])
def test_a_global_batch_is_ranks_x_batch_x_the_fewest_passes(global_batch, expected):
    batch, passes = tta.split_batch(global_batch, 2, 1024)
    assert (batch, passes) == expected and 2 * batch * passes == global_batch and batch <= 1024


def evaluation(epochs, updates, images, accuracy):
    return {"epochs": epochs, "updates": updates, "images": images, "test_accuracy": accuracy, "test_loss": 0.1}


def write_study(out, **changes):
    options = tta.build_parser().parse_args(["--out", str(out), "--global-batches", "256", "4096", "--seeds", "1",
                                             "--max-epochs", "2", *changes.get("argv", [])])
    tta.claim_study(options)
    return options


def test_report_numbers_are_the_trials_metrics(tmp_path):
    write_study(tmp_path)
    reached = [evaluation(0.25, 54, 13824, 0.97), evaluation(0.5, 108, 27648, 0.9901),
               evaluation(0.75, 162, 41472, 0.9926)]
    missed = [evaluation(1.0, 7, 55000, 0.985), evaluation(2.0, 14, 110000, 0.9912)]
    for name, evaluations, target in (("gb256-seed1", reached, {"training_seconds": 12.5}),
                                      ("gb4096-seed1", missed, None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({
            "status": "completed", "global_batch_size": int(name[2:].split("-")[0]),
            "steps": evaluations[-1]["updates"],
            "test_accuracy": evaluations[-1]["test_accuracy"], "test_evaluations": evaluations,
            "time_to_target": target}))
    table = tta.report(tmp_path).read_text()
    summary = json.loads((tmp_path / "tta.json").read_text())
    first, second = summary["trials"]
    assert first["target"] == {"epochs": 0.75, "updates": 162, "images": 41472}  # the first at >= 0.9925
    assert first["also"] == {"epochs": 0.5, "updates": 108, "images": 27648}  # the first at >= 0.99
    assert (first["batch"], first["passes"], first["training_seconds_to_target"]) == (128, 1, 12.5)
    assert second["target"] is None and second["also"] == {"epochs": 2.0, "updates": 14, "images": 110000}
    assert (second["batch"], second["passes"]) == (1024, 2)
    assert summary["by_global_batch"][0] == {"global_batch": 256, "trials": 1, "reached": 1, "median_epochs": 0.75,
                                             "median_updates": 162, "median_images": 41472}
    assert summary["by_global_batch"][1]["reached"] == 0
    assert "| 256 | 2 x 128 x 1 | 1 | 0.75 | 162 | 41472 | 0.50 | 108 | 27648 | 0.9926 |" in table
    assert "| 4096 | 2 x 1024 x 2 | 1 | not reached within 2 epochs | | " in table
    assert (tmp_path / "tta.png").read_bytes()[:4] == b"\x89PNG"


def test_a_trial_not_run_yet_is_pending(tmp_path):
    write_study(tmp_path)
    rows = json.loads((tta.report(tmp_path).parent / "tta.json").read_text())["trials"]
    assert [r["status"] for r in rows] == ["pending", "pending"]


def test_a_rerun_must_keep_the_studys_settings(tmp_path):
    write_study(tmp_path)
    write_study(tmp_path, argv=["--seeds", "1", "2"])  # more seeds or batches: the same study, grown
    with pytest.raises(tta.cli.UsageError, match="holds a study with target_accuracy 0.9925, not 0.99"):
        write_study(tmp_path, argv=["--target-accuracy", "0.99"])


def test_bad_study_arguments_are_one_line_before_any_rank(tmp_path, mnist_dir, capsys):
    status = tta.main(["--out", str(tmp_path / "s"), "--global-batches", "255"])
    assert status == 2
    assert capsys.readouterr().err.strip() == "error: --global-batches: 255 is not a multiple of --ranks 2"
    status = tta.main(["--out", str(tmp_path / "s"), "--", "--batch-size", "0"])
    assert status == 2 and "--batch-size: '0'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_dry_run_prints_every_trials_training(tmp_path, mnist_dir, capsys):
    status = tta.main(["--out", str(tmp_path / "s"), "--dry-run", "--", "--data-dir", str(mnist_dir)])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0 and len(lines) == 12 and not (tmp_path / "s").exists()
    assert lines[-1].startswith("gb16384-seed44 (to run): mnist-hpc train --model cnn --recipe default --epochs 100 "
                                "--batch-size 1024 --backward-passes-per-step 8 --seed 44 --target-accuracy 0.9925 "
                                "--eval-every 0.25")


def test_mnist_hpc_bench_tta_is_the_same_study(tmp_path, mnist_dir, capsys):
    from mnist_hpc import cli

    status = cli.main(["bench", "tta", "--out", str(tmp_path / "s"), "--dry-run", "--", "--data-dir", str(mnist_dir)])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0 and len(lines) == 12 and lines[0].startswith("gb256-seed42 (to run): mnist-hpc train")


def test_report_only_writes_the_report_and_trains_nothing(tmp_path, monkeypatch, capsys):
    """--report-only: tta.md/json/png from the trials so far (one pending here), no rank started."""
    write_study(tmp_path)
    (tmp_path / "gb256-seed1").mkdir()
    (tmp_path / "gb256-seed1" / "metrics.json").write_text(json.dumps({
        "status": "completed", "global_batch_size": 256, "steps": 162, "test_accuracy": 0.9926,
        "test_evaluations": [evaluation(0.75, 162, 41472, 0.9926)], "time_to_target": {"training_seconds": 9.0}}))
    monkeypatch.setattr(tta, "launch", lambda *a, **k: pytest.fail("--report-only started a trial"))
    assert tta.main(["--out", str(tmp_path), "--global-batches", "256", "4096", "--seeds", "1", "--max-epochs", "2",
                     "--report-only"]) == 0
    assert "| 256 | 2 x 128 x 1 | 1 | 0.75 |" in capsys.readouterr().out
    assert {p.name for p in tmp_path.glob("tta.*")} == {"tta.md", "tta.json", "tta.png"}
    assert not (tmp_path / "gb4096-seed1").exists()
