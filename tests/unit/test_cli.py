"""Bad input: one line naming the value and what is allowed, before any MPI work, nothing lost."""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from conftest import assert_one_line_error, cli
from mnist_hpc import checkpoint


@pytest.mark.parametrize("args,fragments", [
    (["--model", "resnet"], ["'resnet'", "simple", "cnn"]),
    (["--recipe", "fast"], ["'fast'", "default", "seed"]),
    (["--batch-size", "0"], ["--batch-size", "'0'", "batch size from 1 to 55000"]),
    (["--batch-size", "-5"], ["--batch-size", "'-5'", "batch size from 1 to 55000"]),
    (["--batch-size", "55001"], ["--batch-size", "'55001'", "batch size from 1 to 55000"]),
    (["--epochs", "two"], ["--epochs", "'two'", "positive integer"]),
    (["--steps", "-1"], ["--steps", "'-1'", "positive integer"]),
    (["--lr", "0"], ["--lr", "'0'", "positive finite number"]),
    (["--lr", "-0.1"], ["--lr", "'-0.1'", "positive finite number"]),
    # hostile numbers: NaN, infinities, overflow, beyond what the option means
    (["--lr", "nan"], ["--lr", "'nan'", "positive finite number"]),
    (["--lr", "inf"], ["--lr", "'inf'", "positive finite number"]),
    (["--lr=-inf"], ["--lr", "'-inf'", "positive finite number"]),
    (["--lr", "1e39"], ["--lr", "'1e39'", "up to 3.4e38"]),
    (["--warmup-epochs", "nan"], ["--warmup-epochs", "'nan'", "non-negative finite"]),
    (["--warmup-epochs", "inf"], ["--warmup-epochs", "'inf'", "non-negative finite"]),
    (["--fusion-threshold-mb", "NaN"], ["--fusion-threshold-mb", "'NaN'", "non-negative finite"]),
    (["--cycle-time-ms", "Infinity"], ["--cycle-time-ms", "'Infinity'", "positive finite"]),
    (["--target-accuracy", "nan"], ["--target-accuracy", "'nan'"]),
    (["--epochs", "1e3"], ["--epochs", "'1e3'", "positive integer"]),
    (["--epochs", "2147483648"], ["--epochs", "'2147483648'", "up to 2147483647"]),
    (["--steps", "99999999999999999999999"], ["--steps", "up to 2147483647"]),
    (["--seed", "-1"], ["--seed", "'-1'", "non-negative integer"]),
    (["--seed", "4294967296"], ["--seed", "'4294967296'", "up to 2147483647"]),
    (["--keep-checkpoints", "0"], ["--keep-checkpoints", "'0'", "positive integer"]),
    (["--threads", "nan"], ["--threads", "'nan'", "positive integer"]),
    (["--precision", "int8"], ["'int8'", "fp32", "bf16"]),
    (["--epochs", "2", "--steps", "5"], ["--steps", "--epochs"]),
    (["--augment", "9"], ["--augment", "'9'", "0 to 8"]),
    (["--augment", "-1"], ["--augment", "'-1'"]),
    (["--warmup-epochs", "-1"], ["--warmup-epochs", "'-1'", "non-negative"]),
    (["--model", "simple", "--precision", "bf16"], ["--precision", "bf16", "cnn", "auto, fp32"]),
])
def test_bad_train_arguments(args, fragments, mnist_dir, tmp_path):
    result = cli("train", *args, "--data-dir", str(mnist_dir), "--out", str(tmp_path / "run"))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_dry_run_shows_the_resolved_recipe(mnist_dir, tmp_path):
    result = cli("train", "--model", "cnn", "--epochs", "4", "--augment", "1", "--dry-run",
                 "--data-dir", str(mnist_dir), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    recipe = result.stdout.splitlines()[-1]
    for fragment in ("epochs=4", "augment=1", "init='he'", "lr=0.001", "batch_size=128", "warmup_epochs=0.25"):
        assert fragment in recipe, recipe
    seed = cli("train", "--model", "cnn", "--recipe", "seed", "--dry-run", "--data-dir", str(mnist_dir),
               "--out", str(tmp_path / "run")).stdout.splitlines()[-1]
    assert "steps=20000" in seed and "init='tutorial'" in seed and "augment=0" in seed
    assert not (tmp_path / "run").exists()


def test_missing_data(tmp_path):
    result = cli("train", "--data-dir", str(tmp_path / "nodata"), "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "nodata", "mnist-hpc data fetch", "--data-dir")


def test_unwritable_run_dir(mnist_dir):
    """Without the right to write there. Root writes anywhere, so root runs the CLI without the
    capabilities that override file permissions (a user such as nobody cannot run a Python that
    lives under a 0700 /root, as pyenv's does here)."""
    top = tempfile.mkdtemp(prefix="mnist-hpc-ro-")
    try:
        os.chmod(top, 0o555)
        as_user = (["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
                   if os.geteuid() == 0 else [])
        result = subprocess.run([*as_user, sys.executable, "-m", "mnist_hpc", "train", "--data-dir", str(mnist_dir),
                                 "--out", f"{top}/run"], capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, HOME=top))
        assert_one_line_error(result, "--out", f"{top}/run", "not writable")
    finally:
        os.chmod(top, 0o755)
        shutil.rmtree(top)


def test_run_dir_under_a_file(tmp_path, mnist_dir):
    (tmp_path / "file").write_text("x")
    result = cli("train", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "file" / "run"))
    assert_one_line_error(result, "--out", "is not a directory")


def test_resume_from_the_other_models_checkpoint(tmp_path, mnist_dir):
    saved = checkpoint.save(tmp_path / "run" / "checkpoints", {"model": "simple", "epoch": 3, "history": []},
                            {"logits/bias:0": np.zeros(3, np.float32)}, {})
    before = saved.read_bytes()
    result = cli("train", "--model", "cnn", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "ckpt-00003.npz", "'simple', not 'cnn'")
    assert saved.read_bytes() == before  # nothing already written is touched
    result = cli("train", "--model", "cnn", "--resume", str(tmp_path / "nope.npz"), "--data-dir", str(mnist_dir),
                 "--out", str(tmp_path / "run2"))
    assert_one_line_error(result, "nope.npz", "auto, never")


def test_every_subcommand_has_help():
    for args in (["--help"], ["train", "--help"], ["evaluate", "--help"], ["data", "--help"]):
        result = cli(*args)
        assert result.returncode == 0 and "usage:" in result.stdout


def test_every_config_field_comes_from_its_own_option():
    """cli.config_from_args names each option's field: renaming a TrainConfig field breaks this test
    (and config_from_args) instead of silently dropping a flag."""
    from dataclasses import fields

    from mnist_hpc import cli as mnist_cli
    from mnist_hpc.config import TrainConfig

    given = {"--model": ("model", "cnn"), "--recipe": ("recipe", "seed"), "--steps": ("steps", 5),
             "--batch-size": ("batch_size", 7), "--lr": ("lr", 0.25), "--out": ("out", "x"),
             "--resume": ("resume", "never"), "--data-dir": ("data_dir", "d"), "--seed": ("seed", 3),
             "--precision": ("precision", "bf16"), "--warmup-epochs": ("warmup_epochs", 0.5),
             "--augment": ("augment", 1), "--init": ("init", "he"), "--keep-checkpoints": ("keep_checkpoints", 9),
             "--threads": ("intra_op_threads", 4), "--target-accuracy": ("target_accuracy", 0.9)}
    argv = ["train", *[str(part) for option, (_, value) in given.items() for part in (option, value)],
            "--no-scale-lr", "--fp16-allreduce", "--fusion-threshold-mb", "8", "--cycle-time-ms", "1.5",
            "--timeline", "t.json"]
    config = mnist_cli.config_from_args(mnist_cli.build_parser().parse_args(argv))
    for option, (field, value) in given.items():
        assert getattr(config, field) == value, option
    assert config.scale_lr is False and config.fp16_allreduce is True
    assert (config.knobs.fusion_threshold_mb, config.knobs.cycle_time_ms, config.knobs.timeline) == (8, 1.5, "t.json")
    epochs = mnist_cli.config_from_args(mnist_cli.build_parser().parse_args(["train", "--epochs", "4"]))
    assert epochs.epochs == 4
    # every field is fed by an option, except inter-op threads (no option: 2 suits every rank)
    untouched = {f.name for f in fields(TrainConfig) if getattr(config, f.name) == getattr(TrainConfig(), f.name)}
    assert untouched == {"epochs", "inter_op_threads"}
