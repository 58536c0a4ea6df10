"""Benchmarks with real ranks: measured throughput, baseline ratio, time-to-accuracy, sweeps, the timed graph."""

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
    # the ring model's link, solved from the same all-reduce at 4 KiB and 4 MiB, and its prediction checked
    assert result["link"]["from_payloads"] == [4_096, 4_194_304]
    assert result["link"]["latency"] >= 0 and result["link"]["bandwidth"] > 0
    assert {"4096", "4194304", str(3_274_634 * 4)} <= set(result["seconds_by_payload"])
    assert result["measured_over_model"] == pytest.approx(result["seconds"] / result["model_seconds"])


SAME_GRAPH = """
import json, sys
import numpy as np
import tensorflow as tf
import mnist_hpc
from mnist_hpc import bench, config, data, distributed, train

world = distributed.init()
train_config = config.TrainConfig(model="cnn", batch_size=32, precision="fp16", data_dir=sys.argv[1])
bench_config = bench.BenchConfig(train_config, warmup_steps=2, windows=1, window_steps=3)
timed, timed_input, _ = bench.model_and_input(bench_config, world, bench.training_split(bench_config, world))
split = data.load(sys.argv[1], layout="image").train
trained, trained_input = train.model_and_input(train_config, train.schedule_for(train_config, len(split), world),
                                               world, split)

def chain(optimizer):
    names = []
    while optimizer is not None:
        names.append(f"{type(optimizer).__module__}.{type(optimizer).__name__}")
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return names

def settings(model):
    optimizer = model.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    conf = {k: v for k, v in inner.get_config().items() if k != "learning_rate"}
    return {"model": json.loads(model.to_json()), "optimizers": chain(optimizer), "optimizer": conf,
            "loss": model.loss.get_config(), "spec": str(trained_input.element_spec)}

(x, y, w), = trained_input.take(1)
(bx, by, bw), = timed_input.take(1)
print(json.dumps({"train": settings(trained), "bench": settings(timed), "same_first_batch":
                  bool(np.array_equal(x, bx) and np.array_equal(y, by) and np.array_equal(w, bw))}))
"""


def test_the_benchmark_times_the_graph_training_runs(mnist_dir):
    """bench throughput and train build the model, optimizer (Horovod wrapper, fp16 loss scaling) and
    input pipeline with the same functions: equal graphs, equal optimizer chain, equal data."""
    result = subprocess.run([sys.executable, "-c", SAME_GRAPH, str(mnist_dir)], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["bench"] == found["train"]
    outer, horovod = found["train"]["optimizers"][:2]
    assert ".LossScaleOptimizer" in outer and horovod.startswith("horovod."), found["train"]["optimizers"]
    assert found["same_first_batch"]  # the same shard, order and shift augmentation
