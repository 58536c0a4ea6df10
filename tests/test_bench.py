"""Benchmarks: measured throughput, baseline ratio, time-to-accuracy, sweep reports (local and SLURM)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, launch, metrics_of

QUICK = ["--model", "simple", "--synthetic", "--warmup-steps", "2", "--windows", "3", "--window-steps", "5"]


def assert_report(folder, workers):
    rows = json.loads((folder / "report.json").read_text())
    assert [r["workers"] for r in rows] == workers
    assert all(r["images_per_second"] > 0 and r["min"] <= r["images_per_second"] <= r["max"] for r in rows)
    assert rows[0]["speedup"] == 1.0 and rows[0]["efficiency"] == 1.0
    assert (folder / "report.csv").read_text().startswith("workers,")
    assert "| workers |" in (folder / "report.md").read_text()
    for png in ("throughput.png", "efficiency.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return rows


def test_local_strong_scaling_sweep_compares_with_plain_keras(tmp_path):
    out = tmp_path / "sweep"
    completed = subprocess.run([sys.executable, str(REPO / "launchers" / "local.py"), "--np", "2", "--out", str(out),
                                "--global-batch", "64", "sweep", "--", *QUICK],
                               capture_output=True, text=True, timeout=600, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "sweep: 1/2 ranks" in completed.stdout and "sweep: 2/2 ranks" in completed.stdout  # progress
    rows = assert_report(out, [1, 2])
    assert [r["batch_per_worker"] for r in rows] == [64, 32] and rows[0]["scaling"] == "strong"
    plain = json.loads((out / "np1.json").read_text())["plain"]["images_per_second"]
    assert all(r["plain_images_per_second"] == plain and r["over_plain"] == r["images_per_second"] / plain
               for r in rows)
    assert "vs plain" in (out / "report.md").read_text()
    assert json.loads((out / "np2.json").read_text())["world_size"] == 2


def test_global_batch_must_split_evenly(tmp_path):
    completed = subprocess.run([sys.executable, str(REPO / "launchers" / "local.py"), "--np", "2",
                                "--global-batch", "65", "sweep"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert completed.returncode == 2 and "--global-batch: 65 is not a multiple of --np 2" in completed.stderr


def test_horovod_and_plain_keras_measured_in_one_run(tmp_path):
    out = tmp_path / "baseline.json"
    launch(1, "bench", "throughput", *QUICK, "--compare-plain", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["plain"]["images_per_second"] > 0 and result["horovod"]["images_per_second"] > 0
    assert result["horovod_over_plain"] == result["horovod"]["images_per_second"] / result["plain"]["images_per_second"]
    assert len(result["horovod"]["windows"]) == 3


def test_time_to_accuracy_stops_at_the_target(tmp_path, mnist_dir):
    run_dir = tmp_path / "tta"
    launch(2, "train", "--model", "simple", "--epochs", "10", "--target-accuracy", "0.9", "--out", str(run_dir),
           "--data-dir", str(mnist_dir))
    metrics = metrics_of(run_dir)
    reached = metrics["time_to_target"]
    assert reached and reached["epoch"] == metrics["epochs_completed"] < 10
    assert metrics["history"][-1]["test_accuracy"] >= 0.9 > max([h["test_accuracy"] for h in metrics["history"][:-1]] or [0])
    assert 0 < reached["training_seconds"] <= reached["wall_seconds"]


def test_scaling_model_behaves():
    from mnist_hpc import bench

    bandwidth, latency = bench.INTERCONNECTS["100 Gb/s InfiniBand"]
    assert bench.projected_efficiency(1, 128, 10e12, bandwidth, latency) == 1.0
    effs = [bench.projected_efficiency(n, 128, 10e12, bandwidth, latency) for n in (2, 4, 8, 64)]
    assert effs == sorted(effs, reverse=True) and 0 < effs[-1] < effs[0] < 1
    # a bigger batch per worker, fp16 compression or a faster network all help
    assert bench.projected_efficiency(8, 512, 10e12, bandwidth, latency) > effs[2]
    assert bench.projected_efficiency(8, 128, 10e12, bandwidth, latency, bytes_per_parameter=2) > effs[2]
    assert bench.projected_efficiency(8, 128, 10e12, *bench.INTERCONNECTS["200 Gb/s InfiniBand"]) > effs[2]
    # ring all-reduce moves 2(N-1)/N of the payload: 13.1 MB at 12.5 GB/s, N -> large: ~2.1 ms
    assert bench.ring_allreduce_seconds(64, 13_098_536, 12.5e9, 0) == pytest.approx(2 * 63 / 64 * 13_098_536 / 12.5e9)
    assert "| 25 Gb/s Ethernet |" in bench.scaling_table(128, 10e12)


def test_throughput_under_two_ranks_with_a_horovod_timeline(tmp_path):
    out, timeline = tmp_path / "np2.json", tmp_path / "timeline.json"
    launch(2, "bench", "throughput", *QUICK, "--timeline", str(timeline), "--out", str(out))
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and len(result["horovod"]["windows"]) == 3
    assert result["horovod"]["images_per_second_per_rank"] * 2 == pytest.approx(result["images_per_second"])
    assert "ALLREDUCE" in timeline.read_text()  # Horovod wrote its timeline of the all-reduces


def test_measured_allreduce(tmp_path):
    out = tmp_path / "allreduce.json"
    launch(2, "bench", "allreduce", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["payload_bytes"] == 3_274_634 * 4
    assert result["seconds"] > 0 and result["bus_bandwidth_bytes_per_second"] > 0
