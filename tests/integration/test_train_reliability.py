"""Training reliability: divergence, full disks, unreadable files, damaged data, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, damage_data, launch, metrics_of, our_lines
from mnist_hpc import checkpoint, export, rundir
from mnist_hpc.exitcode import ExitCode

def mnist_hpc(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_hpc", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kwargs)


@contextmanager
def small_tmpfs(path: Path, size: str):
    """A real file system of ``size`` at ``path`` (root only, as the suite runs): disks fill for real."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> None:
    """Write until the file system is full (ENOSPC), leaving no room for anything else."""
    with open(directory / "filler", "wb", buffering=0) as out:  # unbuffered: nothing left to fail at close
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass


# ------------------------------------------------------------------ hostile numbers beyond the CLI
# ------------------------------------------------------------------ divergence
@pytest.fixture(scope="module")
def good_run(tmp_path_factory, mnist_dir) -> Path:
    """One good epoch of the softmax model on 2 ranks: ckpt-00001, model.keras, metrics.json."""
    run_dir = tmp_path_factory.mktemp("good") / "run"
    launch(2, "train", "--model", "simple", "--epochs", "1", "--out", str(run_dir), "--data-dir", str(mnist_dir))
    return run_dir


def as_if_trained_with(path: Path, **settings) -> None:
    """Rewrite the checkpoint at ``path`` as a run with these settings would have written it (a test
    seam: the first epoch of a run at an absurd rate that happened to survive it, without training
    one; a resume must repeat a run's own settings)."""
    found = checkpoint.load(path)
    path.unlink()
    checkpoint.save(path.parent, {**found.meta, "config": {**found.meta["config"], **settings}},
                    found.model_weights, found.optimizer_variables)


def test_divergence_stops_every_rank_and_keeps_the_last_good_checkpoint(good_run, tmp_path, mnist_dir):
    run_dir = tmp_path / "diverging"
    subprocess.run(["cp", "-a", str(good_run), str(run_dir)], check=True)
    as_if_trained_with(checkpoint.path_for(run_dir / "checkpoints", 1), lr=1e37)
    model_before = (run_dir / "model.keras").read_bytes()
    ckpt_before = checkpoint.path_for(run_dir / "checkpoints", 1).read_bytes()
    # resumed at epoch 1 with an absurd rate: the softmax logits overflow, the loss turns NaN in epoch 2
    result = launch(2, "train", "--model", "simple", "--epochs", "4", "--lr", "1e37", "--out", str(run_dir),
                    "--data-dir", str(mnist_dir), check=False, timeout=300)
    assert result.returncode == ExitCode.FAILED, result.stdout[-2000:]  # not 75: requeued, it would diverge again
    ours = [line for line in our_lines(result.stderr) if line.startswith("error:")]
    assert len(ours) == 1, result.stderr
    assert "error: training diverged in epoch 2" in ours[0] and "lower --lr" in ours[0] and "ckpt-00001.npz" in ours[0]
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "diverged" and metrics["divergence"]["epoch"] == 2
    assert metrics["test_accuracy"] is None and [h["epoch"] for h in metrics["history"]] == [1]
    # the last good checkpoint and model are untouched, intact and loadable; no checkpoint of NaNs was written
    assert checkpoint.candidates(run_dir / "checkpoints") == [checkpoint.path_for(run_dir / "checkpoints", 1)]
    assert checkpoint.path_for(run_dir / "checkpoints", 1).read_bytes() == ckpt_before
    good = checkpoint.load(checkpoint.path_for(run_dir / "checkpoints", 1))
    assert all(np.isfinite(w).all() for w in [*good.model_weights.values(), *good.optimizer_variables.values()])
    assert (run_dir / "model.keras").read_bytes() == model_before
    evaluated = launch(1, "evaluate", str(run_dir), "--data-dir", str(mnist_dir))
    assert "test accuracy 0.9" in evaluated.stdout


def test_an_exploding_but_finite_loss_is_not_divergence(tmp_path, mnist_dir):
    """A high rate that keeps the loss finite trains to the end (badly): the guard is for NaN/inf only."""
    run_dir = tmp_path / "hot"
    launch(2, "train", "--model", "simple", "--epochs", "2", "--lr", "1000", "--out", str(run_dir),
           "--data-dir", str(mnist_dir))
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "completed" and metrics["divergence"] is None
    assert all(np.isfinite(h["loss"]) for h in metrics["history"])


# ------------------------------------------------------------------ full disks, read-only and other OS errors
def test_full_disk_during_training_is_one_line_and_damages_nothing(good_run, tmp_path, mnist_dir):
    """Through the CLI: the first write that fails (here the run's config.toml, written by rank 0 before
    training starts) ends the run in one line."""
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        run_dir = disk / "run"
        subprocess.run(["cp", "-a", str(good_run), str(run_dir)], check=True)
        before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        fill(disk)
        result = mnist_hpc("train", "--model", "simple", "--epochs", "3", "--out", str(run_dir),
                           "--data-dir", str(mnist_dir))
        assert result.returncode == ExitCode.FAILED, result.stdout + result.stderr
        lines = our_lines(result.stderr)
        assert len(lines) == 1, lines
        assert lines[-1].startswith(f"error: {run_dir}/config.toml") and "No space left on device" in lines[-1], lines
        for name, content in before.items():  # everything already written reads back as it was
            if name.parts[0] != "tensorboard" and name.name != ".lock":
                assert (run_dir / name).read_bytes() == content, name
        assert not list((run_dir / "checkpoints").glob(".ckpt-*")) and not list(run_dir.glob(".metrics.json.*"))
        checkpoint.load(checkpoint.path_for(run_dir / "checkpoints", 1))


def test_full_disk_for_checkpoint_metrics_and_model_leaves_the_old_files(good_run, tmp_path):
    """The four writers of a run's state, on a real full file system: the old files stay whole."""
    import tensorflow as tf

    model = tf.keras.models.load_model(good_run / "model.keras", compile=False)
    good = checkpoint.load(checkpoint.path_for(good_run / "checkpoints", 1))
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "metrics.json").write_text(json.dumps({"status": "completed"}))
        rundir.save_model_atomic(model, disk / "model.keras")
        model_bytes = (disk / "model.keras").read_bytes()
        export.write(model, disk / export.NAME)
        exported = {p: p.read_bytes() for p in (disk / export.NAME).rglob("*") if p.is_file()}
        first = checkpoint.save(disk / "checkpoints", good.meta, good.model_weights, good.optimizer_variables)
        first_bytes = first.read_bytes()
        fill(disk)
        with pytest.raises(OSError) as err:
            checkpoint.save(disk / "checkpoints", {**good.meta, "epoch": 2}, good.model_weights,
                            good.optimizer_variables)
        assert err.value.filename == str(checkpoint.path_for(disk / "checkpoints", 2))
        assert err.value.strerror == "No space left on device"
        assert [p.name for p in (disk / "checkpoints").iterdir()] == [first.name] and first.read_bytes() == first_bytes
        with pytest.raises(OSError) as err:
            rundir.write_json_atomic(disk / "metrics.json", {"status": "x" * 100_000})
        assert "No space left on device" in str(err.value)
        with pytest.raises(OSError):
            rundir.save_model_atomic(model, disk / "model.keras")
        assert json.loads((disk / "metrics.json").read_text()) == {"status": "completed"}
        assert (disk / "model.keras").read_bytes() == model_bytes
        with pytest.raises(OSError) as err:
            export.write(model, disk / export.NAME)
        assert err.value.filename == str(disk / export.NAME) and err.value.strerror == "No space left on device"
        assert {p: p.read_bytes() for p in (disk / export.NAME).rglob("*") if p.is_file()} == exported
        export.verify(disk / export.NAME)
        assert sorted(p.name for p in disk.iterdir()) == ["checkpoints", "filler", "metrics.json", "model.keras",
                                                          export.NAME]


@pytest.mark.parametrize("case", ["read-only file system", "name too long", "parent is a file"])
def test_run_directory_os_errors_are_one_line(case, tmp_path, mnist_dir):
    if case == "read-only file system":
        ro = tmp_path / "ro"
        ro.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
        out, expect = ro / "run", ("not writable", ExitCode.USAGE)
    elif case == "name too long":
        out, expect = tmp_path / ("x" * 300) / "run", ("File name too long", ExitCode.FAILED)
    else:
        (tmp_path / "file").write_text("")
        out, expect = tmp_path / "file" / "run", ("is not a directory", ExitCode.USAGE)
    try:
        result = mnist_hpc("train", "--model", "simple", "--epochs", "1", "--out", str(out), "--data-dir",
                           str(mnist_dir), timeout=60)
    finally:
        if case == "read-only file system":
            subprocess.run(["umount", "-l", str(tmp_path / "ro")], check=False)
    lines = our_lines(result.stderr)
    assert result.returncode == expect[1] and len(lines) == 1 and expect[0] in lines[0], result.stderr
    assert lines[0].startswith("error: ") and str(out) in lines[0]


# ------------------------------------------------------------------ unreadable inputs
def damaged_copy(source: Path, target: Path, how: str) -> Path:
    content = bytearray(source.read_bytes())
    if how == "truncated":
        content = content[: len(content) // 2]
    else:  # one flipped byte in the middle: the zip CRC catches it
        content[len(content) // 2] ^= 0xFF
    target.write_bytes(bytes(content))
    return target


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_evaluate_a_damaged_model_is_one_line(good_run, tmp_path, mnist_dir, how):
    model = damaged_copy(good_run / "model.keras", tmp_path / "model.keras", how)
    result = mnist_hpc("evaluate", str(model), "--data-dir", str(mnist_dir), timeout=60)
    lines = our_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {model}: ") and "Keras model" in lines[0]


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_resume_from_a_damaged_checkpoint_is_one_line(good_run, tmp_path, mnist_dir, how):
    ckpt = damaged_copy(checkpoint.path_for(good_run / "checkpoints", 1), tmp_path / "ckpt-00001.npz", how)
    result = mnist_hpc("train", "--model", "simple", "--epochs", "2", "--resume", str(ckpt), "--out",
                       str(tmp_path / "run"), "--data-dir", str(mnist_dir), timeout=60)
    lines = our_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {ckpt}: unreadable checkpoint")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.parametrize("entry", ["cli train", "cli evaluate", "mpirun train", "mpirun evaluate"])
def test_damaged_data_is_one_line_before_horovod_starts(entry, how, good_run, tmp_path, mnist_copy):
    """The fault table's data row through the entry points a user runs: `mnist-hpc train|evaluate` and
    `launchers/local.py --np 2` (mpirun). One line naming the file, status 2, no rank started, nothing written."""
    damaged = damage_data(mnist_copy, how)
    launcher, command = entry.split()
    target = ["--out", str(tmp_path / "run"), "--epochs", "1"] if command == "train" else [str(good_run)]
    prefix = [sys.executable, "-m", "mnist_hpc"] if launcher == "cli" else \
        [sys.executable, str(REPO / "launchers" / "local.py"), "--np", "2"]
    result = subprocess.run([*prefix, command, *target, "--data-dir", str(mnist_copy)], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    lines = our_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith("error: --data-dir: ") and str(damaged) in lines[0], lines[0]
    assert "mpirun" not in result.stdout and "Horovod" not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ memory, batch size
PEAK_RSS = """
import resource, sys
import mnist_hpc
from mnist_hpc import data, distributed, pipeline
split = data.load(sys.argv[1], layout="flat").train
world = distributed.World(0, 1, 0, 1)
plan = pipeline.shard_plan(len(split), 1, 100)
dataset = pipeline.training_dataset(split, world, plan, 0, int(sys.argv[2]), seed=42)
for _ in dataset.take(3):
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_start_up_memory_does_not_grow_with_the_epoch_count(mnist_dir):
    peaks = {}
    for epochs in (1, 1000):
        result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(mnist_dir), str(epochs)], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        peaks[epochs] = int(result.stdout.split()[-1])
    # all epochs at once would hold 1000 x 55,000 indices and weights: over 600 MB more
    assert abs(peaks[1000] - peaks[1]) < 64, peaks


def test_a_batch_larger_than_a_shard_is_lowered_with_one_warning(tmp_path, mnist_dir):
    run_dir = tmp_path / "big-batch"
    result = launch(2, "train", "--model", "simple", "--epochs", "1", "--batch-size", "40000", "--out", str(run_dir),
                    "--data-dir", str(mnist_dir))
    warnings = [line for line in our_lines(result.stderr) if line.startswith("warning:")]
    assert warnings == ["warning: --batch-size 40000 is more than each rank's shard of 27500 images on 2 ranks: "
                        "using 27500"], result.stderr
    metrics = metrics_of(run_dir)
    assert metrics["recipe_settings"]["batch_size"] == 27500 and metrics["history"][0]["steps"] == 1
