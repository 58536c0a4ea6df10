"""Bad input: one line naming the value and what is allowed, before any MPI work, nothing lost."""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, cli
from mnist_hpc import checkpoint
from mnist_hpc import cli as mnist_cli


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
    (["--backward-passes-per-step", "0"], ["--backward-passes-per-step", "'0'", "positive integer up to 55000"]),
    (["--backward-passes-per-step", "2.5"], ["--backward-passes-per-step", "'2.5'", "positive integer"]),
    (["--model", "cnn", "--batch-size", "1024", "--backward-passes-per-step", "64"],
     ["--backward-passes-per-step", "64 x batch 1024 = 65536", "K x --batch-size up to 55000"]),
    (["--model", "cnn", "--backward-passes-per-step", "500"], ["500 x batch 128 = 64000"]),  # the recipe's batch
    (["--eval-every", "0"], ["--eval-every", "'0'", "fraction of an epoch in (0, 1]"]),
    (["--eval-every", "1.5", "--target-accuracy", "0.9"], ["--eval-every", "'1.5'", "(0, 1]"]),
    (["--eval-every", "0.25"], ["--eval-every", "0.25 needs --target-accuracy"]),
    (["--dropout", "1"], ["--dropout", "'1'", "a dropout rate from 0 to 0.95"]),
    (["--adam-beta1", "0"], ["--adam-beta1", "'0'", "above 0 and at most 0.999"]),
    (["--model", "simple", "--dropout", "0.1"], ["--dropout: model simple has no dropout layer", "with one: cnn"]),
    (["--model", "simple", "--adam-beta1", "0.8"], ["--adam-beta1: recipe default of model simple", "SGD, not Adam"]),
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
    for args in (["--help"], ["train", "--help"], ["evaluate", "--help"], ["data", "--help"],
                 ["data", "fetch", "--help"], ["bench", "peak", "--help"], ["slurm", "render", "--help"]):
        result = cli(*args)
        assert result.returncode == 0 and "usage:" in result.stdout


def load_script(relative: str):
    """A launcher or script as a module (they are run by path, not imported as a package)."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def options_without_help(parser: argparse.ArgumentParser, where: str):
    """Every argument of ``parser`` and of its subcommands, recursively, that has no help text."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from (f"{where} {choice.dest}" for choice in action._choices_actions if not choice.help)
            for name, sub in action.choices.items():
                yield from options_without_help(sub, f"{where} {name}")
        elif not action.help:
            yield f"{where} {'/'.join(action.option_strings) or action.dest}"


SCRIPTS = ["launchers/local.py", "launchers/submit.py", "launchers/scaling.py", "scripts/gpu_acceptance.py",
           "benchmarks/plain_keras.py"]


def test_every_option_of_every_parser_has_help():
    parsers = {"mnist-hpc": mnist_cli.build_parser()} | {path: load_script(path).build_parser() for path in SCRIPTS}
    missing = [line for name, parser in parsers.items() for line in options_without_help(parser, name)]
    assert not missing, missing


def test_the_help_walk_reaches_every_subcommand():
    """The walk above must not pass by stopping early: arguments two levels down, and a subcommand
    listed without help, are found."""
    parser = mnist_cli.build_parser()

    def actions_of(*names):
        sub = parser
        for name in names:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        return {a.dest: a for a in sub._actions}

    actions_of("data", "fetch")["mirror"].help = None
    actions_of("bench", "peak")["intra_op_threads"].help = None
    actions_of("slurm", "render")["template"].help = None
    listing = next(a for a in actions_of("bench").values() if isinstance(a, argparse._SubParsersAction))
    next(c for c in listing._choices_actions if c.dest == "report").help = None
    assert sorted(options_without_help(parser, "mnist-hpc")) == [
        "mnist-hpc bench peak --threads", "mnist-hpc bench report", "mnist-hpc data fetch --mirror",
        "mnist-hpc slurm render template"]


@pytest.mark.parametrize("args,fragments", [
    (["bench", "peak", "--batch-size", "64", "--dry-run"], ["bench peak", "--batch-size 64", "--threads, --out"]),
    (["bench", "allreduce", "--model", "cnn", "--dry-run"], ["bench allreduce", "--model cnn", "--out, --dry-run"]),
    (["bench", "report", "runs/x", "--synthetic", "--dry-run"], ["bench report", "--synthetic", "--dry-run"]),
    (["data", "verify", "--mirror", "http://x/"], ["data verify", "--mirror http://x/", "allowed: --dir"]),
    (["slurm", "render", "train_cnn", "--model", "cnn"], ["slurm render", "--model cnn", "--nodes"]),
    (["doctor", "--out", "x"], ["doctor", "--out x", "allowed: --json"]),
])
def test_an_option_the_action_does_not_take_is_refused(args, fragments):
    """Each action of bench, data and slurm takes its own options only: one it does not use is an
    error naming what it takes, not silently ignored."""
    result = cli(*args)
    assert_one_line_error(result, "unrecognized arguments", *fragments)
    assert result.stdout == ""


@pytest.mark.parametrize("args,fragment", [
    ([], "required: {train,evaluate,data,bench,doctor,slurm}"),
    (["bench"], "required: {throughput,peak,allreduce,report,tta,project}"),
    (["data"], "required: {fetch,verify}"),
    (["slurm"], "required: {render}"),
    (["bench", "report"], "required: results"),
])
def test_a_missing_subcommand_names_the_choices(args, fragment):
    assert_one_line_error(cli(*args), fragment)


def test_every_config_field_comes_from_its_own_option():
    """cli.config_from_args names each option's field: renaming a TrainConfig field breaks this test
    (and config_from_args) instead of silently dropping a flag."""
    from dataclasses import fields

    from mnist_hpc import cli as mnist_cli
    from mnist_hpc.config import TrainConfig

    given = {"--model": ("model", "simple"), "--recipe": ("recipe", "seed"), "--steps": ("steps", 5),
             "--batch-size": ("batch_size", 7), "--lr": ("lr", 0.25), "--out": ("out", "x"),
             "--resume": ("resume", "never"), "--data-dir": ("data_dir", "d"), "--seed": ("seed", 3),
             "--precision": ("precision", "bf16"), "--warmup-epochs": ("warmup_epochs", 0.5),
             "--augment": ("augment", 1), "--init": ("init", "he"), "--keep-checkpoints": ("keep_checkpoints", 9),
             "--threads": ("intra_op_threads", 4), "--target-accuracy": ("target_accuracy", 0.9),
             "--inter-op-threads": ("inter_op_threads", 3), "--eval-every": ("eval_every", 0.5),
             "--backward-passes-per-step": ("backward_passes_per_step", 3), "--dropout": ("dropout", 0.25),
             "--adam-beta1": ("adam_beta1", 0.8)}
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
    # every field is fed by an option (--epochs excludes --steps)
    untouched = {f.name for f in fields(TrainConfig) if getattr(config, f.name) == getattr(TrainConfig(), f.name)}
    assert untouched == {"epochs"}


NO_TENSORFLOW = """
import sys
from mnist_hpc import cli
statuses = [int(cli.main(argv)) for argv in (
    ["train", "--model", "cnn", "--dry-run", "--data-dir", sys.argv[1], "--out", sys.argv[2]],  # validates it all
    ["train", "--lr", "nan"], ["evaluate", sys.argv[2]], ["bench", "throughput", "--batch-size", "0"],
    ["slurm", "render", "train_cnn"], ["data", "verify", "--dir", sys.argv[1]])]
print(statuses, sorted({name.split(".")[0] for name in sys.modules} & {"tensorflow", "tf_keras", "keras", "horovod"}))
"""


def test_the_cli_imports_no_tensorflow(mnist_dir, tmp_path):
    """Validation, refusals, rendering and data checks run before any TensorFlow (or Horovod) import:
    an input error costs no TensorFlow start-up and comes before any MPI work."""
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(mnist_dir), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[0, 2, 2, 2, 0, 0] []", result.stdout
