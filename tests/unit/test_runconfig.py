"""The run-directory rule: a directory of its own, config.toml, and refusing a resume with other settings."""

from __future__ import annotations

import tomllib
from dataclasses import asdict

import pytest

from mnist_hpc import runconfig
from mnist_hpc.config import TrainConfig
from mnist_hpc.distributed import HorovodKnobs


def meta_of(config: TrainConfig, epoch: int = 3) -> dict:
    """What a checkpoint records (train.fit_callbacks: the config as JSON)."""
    return {"model": config.model, "epoch": epoch, "config": asdict(config)}


def test_another_learning_rate_is_refused_naming_both_values():
    saved = TrainConfig(model="simple", lr=0.5, out="runs/a")
    with pytest.raises(runconfig.RunConfigError) as err:
        runconfig.check_resumable(meta_of(saved), TrainConfig(model="simple", lr=0.01, out="runs/a"), "runs/a")
    message = str(err.value)
    assert "\n" not in message and message.startswith("runs/a holds a run with other settings: --lr 0.5 there, 0.01 now")


def test_every_differing_setting_is_named():
    saved = TrainConfig(model="cnn", seed=1, precision="fp32", augment=0, out="runs/a")
    now = TrainConfig(model="cnn", seed=2, precision="bf16", augment=3, out="runs/a")
    with pytest.raises(runconfig.RunConfigError) as err:
        runconfig.check_resumable(meta_of(saved), now, "runs/a")
    for part in ("--seed 1 there, 2 now", "--precision fp32 there, bf16 now", "--augment 0 there, 3 now"):
        assert part in str(err.value)


def test_the_recipe_value_given_explicitly_is_the_same_run():
    saved = TrainConfig(model="simple", out="runs/a")  # the default recipe's lr 1.0, batch 256
    runconfig.check_resumable(meta_of(saved), TrainConfig(model="simple", lr=1.0, batch_size=256, out="runs/a"),
                              "runs/a")


@pytest.mark.parametrize("change", [
    {"epochs": 40}, {"target_accuracy": 0.9}, {"out": "elsewhere"}, {"data_dir": "/data"}, {"keep_checkpoints": 9},
    {"intra_op_threads": 4}, {"knobs": HorovodKnobs(cycle_time_ms=2.0)}, {"steps": 100}])
def test_what_may_change_on_resume_resumes(change):
    saved = TrainConfig(model="simple", epochs=30, out="runs/a")
    runconfig.check_resumable(meta_of(saved), TrainConfig(**(asdict(saved) | {"knobs": saved.knobs}) | change),
                              "runs/a")


def test_a_budget_shorter_than_what_was_trained_is_refused():
    saved = TrainConfig(model="simple", epochs=10, out="runs/a")
    with pytest.raises(runconfig.RunConfigError, match="--epochs: 4 is fewer than the 6 epochs runs/a has trained"):
        runconfig.check_resumable(meta_of(saved, epoch=6), TrainConfig(model="simple", epochs=4, out="runs/a"),
                                  "runs/a")


def test_a_checkpoint_from_before_run_configs_resumes():
    runconfig.check_resumable({"model": "simple", "epoch": 2}, TrainConfig(model="simple", lr=3.0), "runs/a")


def test_a_run_without_out_gets_a_new_directory_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runconfig.default_out("cnn", environ={}).parent == runconfig.RUNS_ROOT / "cnn"
    now = 1_800_000_000.0
    first = runconfig.new_run_dir(tmp_path, now)
    first.mkdir()
    second = runconfig.new_run_dir(tmp_path, now)  # another run in the same second
    assert second.name == f"{first.name}-2" and not second.exists()


def test_ranks_of_a_slurm_job_share_one_directory_and_find_it_again_after_a_requeue():
    environ = {"SLURM_JOB_ID": "4711", "SLURM_NTASKS": "8", "SLURM_PROCID": "3"}
    assert runconfig.default_out("cnn", environ) == runconfig.RUNS_ROOT / "cnn" / "slurm-4711"


def test_ranks_of_a_bare_mpirun_must_be_given_out():
    with pytest.raises(runconfig.RunConfigError, match="--out: required when a launcher starts 2 ranks"):
        runconfig.default_out("cnn", {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"})


def test_config_toml_holds_the_resolved_settings_and_reads_back():
    config = TrainConfig(model="cnn", seed=7, out="runs/x", knobs=HorovodKnobs(cycle_time_ms=3.5))
    text = runconfig.to_toml(config)
    values = tomllib.loads(text)
    recipe = config.resolved_recipe()
    assert values["lr"] == recipe.lr and values["batch_size"] == recipe.batch_size and values["epochs"] == recipe.epochs
    assert values["seed"] == 7 and values["knobs"] == {"cycle_time_ms": 3.5}
    assert "out" not in values and "resume" not in values  # --config repeats the run in a new directory
    assert runconfig.identity(runconfig.from_saved(values)) == runconfig.identity(config)


@pytest.mark.parametrize("bf16_cpu,now,refused", [
    (True, "bf16", None), (True, "auto", None), (True, "fp32", "--precision bf16 there, fp32 now"),
    (False, "auto", "--precision bf16 there, fp32 now")])
def test_precision_compares_what_auto_resolved_to(monkeypatch, bf16_cpu, now, refused):
    """A checkpoint records the precision `auto` picked (meta["precision"]): an explicit --precision
    with that value is the same run; `auto` on a node that would pick another one is not."""
    from mnist_hpc import precision, quiet

    monkeypatch.setattr(quiet, "gpu_device", lambda: False)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda cpuinfo=None: bf16_cpu)
    saved = TrainConfig(model="cnn", precision="auto", out="runs/a")
    meta = meta_of(saved) | {"precision": "bf16"}
    resumed = TrainConfig(model="cnn", precision=now, out="runs/a")
    if refused is None:
        runconfig.check_resumable(meta, resumed, "runs/a")
    else:
        with pytest.raises(runconfig.RunConfigError, match=refused):
            runconfig.check_resumable(meta, resumed, "runs/a")
