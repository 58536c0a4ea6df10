"""mnist_hpc/sweep.py: the sweep file, its trial plan, the array limit and the report (no scheduler)."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import submitit

from conftest import REPO
from mnist_hpc import cli, runconfig, sweep

EXAMPLE = REPO / "slurm" / "sweeps" / "softmax-lr.toml"


def launcher():
    spec = importlib.util.spec_from_file_location("launcher_sweep", REPO / "launchers" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sweep_file(tmp_path, text: str):
    path = tmp_path / "s.toml"
    path.write_text(f'out = "{tmp_path / "out"}"\n' + text)
    return path


def test_the_grid_times_the_seeds_is_one_trial_each_in_its_own_directory(tmp_path):
    loaded = sweep.load(EXAMPLE, out=tmp_path / "out")
    assert [t.name for t in loaded.trials] == [f"trial-{i:03d}" for i in range(6)]
    assert [(t.config.lr, t.config.seed) for t in loaded.trials] == [(lr, s) for lr in (0.1, 0.5) for s in (1, 2, 3)]
    assert loaded.swept == ("lr", "seed") and loaded.trials[4].swept == {"lr": 0.5, "seed": 2}
    assert {t.run_dir for t in loaded.trials} == {tmp_path / "out" / f"trial-{i:03d}" for i in range(6)}
    assert all(t.config.model == "simple" and t.config.epochs == 3 and t.config.batch_size == 16 for t in loaded.trials)
    assert loaded.throttle == 2 and loaded.job == {"nodes": 1, "ntasks_per_node": 1, "cpus_per_task": 1, "time": "00:20:00"}


def test_a_trials_config_toml_repeats_it_alone(tmp_path):
    trial = sweep.load(EXAMPLE, out=tmp_path / "out").trials[3]
    sweep.write_configs([trial])
    args = cli.build_parser().parse_args(list(sweep.train_args(trial)))
    repeated = cli.config_from_args(args)
    assert runconfig.identity(repeated) == runconfig.identity(trial.config) and repeated.out == str(trial.run_dir)
    assert trial.config_file.read_text() == runconfig.to_toml(trial.config)


def test_a_changed_sweep_file_is_refused_where_a_trial_holds_other_settings(tmp_path):
    trial = sweep.load(EXAMPLE, out=tmp_path / "out").trials[0]
    sweep.write_configs([trial])
    edited = tmp_path / "edited.toml"
    edited.write_text(EXAMPLE.read_text().replace("lr = [0.1, 0.5]", "lr = [0.2, 0.5]"))
    before = trial.config_file.read_bytes()
    with pytest.raises(sweep.SweepError, match="trial-000/config.toml holds other settings"):
        sweep.write_configs(list(sweep.load(edited, out=tmp_path / "out").trials))
    assert trial.config_file.read_bytes() == before and not (tmp_path / "out" / "trial-001").exists()


RANDOM = """seeds = [1, 2]
[base]
model = "cnn"
[random]
n = 5
sampler_seed = {seed}
lr = {{ log_uniform = [1e-4, 1e-1] }}
warmup_epochs = {{ uniform = [0.0, 1.0] }}
precision = ["fp32", "bf16"]
"""


def test_a_random_plan_is_the_same_every_time_and_stays_in_its_bounds(tmp_path):
    first = sweep.load(sweep_file(tmp_path, RANDOM.format(seed=0)))
    again = sweep.load(sweep_file(tmp_path, RANDOM.format(seed=0)))
    other = sweep.load(sweep_file(tmp_path, RANDOM.format(seed=1)))
    assert [t.config for t in first.trials] == [t.config for t in again.trials]
    assert [t.swept for t in first.trials] != [t.swept for t in other.trials]
    assert len(first.trials) == 10 and first.swept == ("lr", "warmup_epochs", "precision", "seed")
    draws = {(t.config.lr, t.config.warmup_epochs, t.config.precision) for t in first.trials}
    assert len(draws) == 5  # each draw once per seed
    assert all(1e-4 <= lr <= 1e-1 and 0 <= w <= 1 and p in ("fp32", "bf16") for lr, w, p in draws)


@pytest.mark.parametrize("text,fragment", [
    ("[grid]\nlr = [0.1, -1]\n", ": [grid]: lr: '-1' is not a positive finite number"),
    ("[grid]\nlearning_rate = [0.1]\n", ": [grid]: unknown setting 'learning_rate' (allowed: model,"),
    ("[grid]\nlr = 0.1\n", ": [grid] lr = 0.1 is not a non-empty list of values"),
    ("[base]\nmodel = \"resnet\"\n", ": [base]: model = 'resnet' is not one of simple, cnn"),
    ("[base]\nout = \"x\"\n", ": [base] out: each trial has its own"),
    ("seeds = [1, -2]\n", ": seeds: seed: '-2' is not a non-negative integer"),
    ("seeds = [1]\n[grid]\nseed = [3]\n", ": seeds: seed is also in [grid] or [random]"),
    ("[random]\nn = 2\nlr = { log_uniform = [0, 1] }\n", ": [random] lr: log_uniform = [0, 1] is not [low, high]"),
    ("[random]\nlr = [0.1]\n", ": [random] n = None is not a positive integer"),
    ("[random]\nn = 2\nlr = { normal = [0, 1] }\n", ": [random] lr = {'normal': [0, 1]} is not a list of values"),
    ("[job]\nnodes = 0\n", ": [job]: argument --nodes: '0' is not a positive integer"),
    ("[job]\nmemory = 4\n", ": [job] unknown key 'memory'"),
    ("learning_rate = 1\n", ": unknown key 'learning_rate' (allowed: out, seeds,"),
    ("[base]\nmodel = \"simple\"\n[grid]\nprecision = [\"fp32\", \"bf16\"]\n",
     ": trial-001: --precision: bf16 applies to cnn; simple trains in fp32"),
    ("throttle = 0\n", ": throttle = 0 is not a positive integer"),
    ("[grid\n", ": not TOML"),
])
def test_a_bad_sweep_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, fragment):
    path = sweep_file(tmp_path, text)
    with pytest.raises(sweep.SweepError) as err:
        sweep.load(path)
    message = str(err.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message, message


SCONTROL = """Configuration data as of 2026-12-02T02:50:00
AccountingStorageType   = accounting_storage/none
MaxArraySize            = 1001
MaxJobCount             = 10000
"""


def test_more_trials_than_max_array_size_allows_are_refused_in_one_line():
    assert sweep.max_array_size(SCONTROL) == 1001 and sweep.max_array_size("nothing") is None
    sweep.check_array_size(1001, 1001, "s.toml")  # indices 0 to 1000
    sweep.check_array_size(5000, None, "s.toml")  # no SLURM to ask: nothing to refuse
    with pytest.raises(sweep.SweepError) as err:
        sweep.check_array_size(1002, 1001, "s.toml")
    assert str(err.value).startswith("s.toml: 1002 trials to submit, more than this cluster's MaxArraySize = 1001")


def test_the_array_script_maps_each_task_to_a_trial_and_keeps_the_templates_requeue(tmp_path):
    loaded = sweep.load(EXAMPLE, out=tmp_path / "out")
    script = sweep.array_script(launcher().job_spec(loaded), tmp_path / "list.txt", 6, 2, tmp_path / "logs")
    assert "#SBATCH --array=0-5%2" in script and f"#SBATCH --output={tmp_path}/logs/%A_%a.out" in script
    assert script.count("#SBATCH --output=") == 1 and "#SBATCH --job-name=sweep-softmax-lr" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script and "--dry-run || exit 2" in script
    header = script[:script.index("set -uo pipefail")]
    assert header.splitlines()[-1].startswith("export MNIST_HPC_RUN_DIR=$trial_dir")
    assert all(line.startswith("#") for line in header.splitlines()[:header.count("#SBATCH") + 3])


def test_the_report_reads_each_trials_metrics_and_names_the_best(tmp_path):
    loaded = sweep.load(EXAMPLE, out=tmp_path / "out")
    for trial, accuracy in zip(loaded.trials[:4], (0.91, 0.925, 0.918, 0.9)):
        trial.run_dir.mkdir(parents=True)
        (trial.run_dir / "metrics.json").write_text(json.dumps(
            {"status": "completed", "test_accuracy": accuracy, "epochs_completed": 3, "wall_seconds": 4.5,
             "startup_seconds": 9.0}))
    (loaded.trials[4].run_dir / "checkpoints").mkdir(parents=True)  # interrupted, no metrics
    table = sweep.rows(loaded, {"trial-004": "failed (CANCELLED)"})
    written = sweep.write_report(loaded, table)
    assert sweep.best(table)["trial"] == "trial-001" and sweep.best(table)["test_accuracy"] == 0.925
    rows = list(csv.DictReader(written["csv"].open()))
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["failed (CANCELLED)", "not finished"]
    assert rows[1]["lr"] == "0.1" and rows[1]["seed"] == "2" and rows[1]["epochs"] == "3"
    assert f"Best: trial-001 (test accuracy 0.9250); config {loaded.trials[1].config_file}" in written["md"].read_text()
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sweep.finished(loaded.trials[0]) and not sweep.finished(loaded.trials[4])


def test_a_sweep_file_without_out_goes_to_runs_sweeps_named_after_the_file(tmp_path):
    path = tmp_path / "my-lr.toml"
    path.write_text('[base]\nmodel = "simple"\n[grid]\nlr = [0.1, 0.2]\n')
    assert sweep.load(path).out == (Path("runs/sweeps/my-lr")).absolute()
    assert sweep.load(path, out=tmp_path / "elsewhere").out == tmp_path / "elsewhere"  # --out overrides it


def test_resubmission_runs_only_what_is_neither_finished_nor_queued_and_status_says_why(tmp_path, monkeypatch, capsys):
    """Six trials of array 77: completed, diverged (finished too), cancelled after its first checkpoint,
    running, pending, failed before any checkpoint. SLURM's answers come through the launcher's
    `scheduler` seam; a re-submission (dry run) would run only trials 2 and 5, at most --throttle at once."""
    module = launcher()
    loaded = sweep.load(EXAMPLE, out=tmp_path / "out")
    logs = tmp_path / "out" / "logs"
    loaded.out.mkdir()
    module.add_record(loaded.out, {"backend": "slurm", "cluster": "slurm", "job": "77", "trials": {
        t.name: {"job_id": f"77_{i}", "log": str(logs / f"77_{i}.out")} for i, t in enumerate(loaded.trials)}})
    for trial, status in zip(loaded.trials[:2], ("completed", "diverged")):
        trial.run_dir.mkdir(parents=True)
        (trial.run_dir / "metrics.json").write_text(json.dumps({"status": status, "test_accuracy": 0.9}))
    (loaded.trials[2].run_dir / "checkpoints").mkdir(parents=True)
    (loaded.trials[2].run_dir / "checkpoints" / "ckpt-00001.npz").write_bytes(b"")
    answers = {"squeue": "77_3 RUNNING\n77_4 PENDING\n", "sacct": "77_2|CANCELLED by 0\n77_5|FAILED\n"}
    monkeypatch.setattr(module, "scheduler", lambda *argv: answers.get(argv[0]))
    options = module.build_parser().parse_args(["submit", str(EXAMPLE), "--dry-run", "--throttle", "1"])

    assert module.cmd_submit(loaded, options) == 0
    printed = capsys.readouterr().out
    assert "would submit 6 trials: 2 finished, 2 queued or running, 2 to run, at most 1 at once" in printed
    assert [line.split()[0] for line in printed.splitlines() if line.startswith("  trial-")] == ["trial-002", "trial-005"]
    assert "#SBATCH --array=0-1%1" in printed

    assert module.cmd_status(loaded, options) == 0
    states = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines() if line.startswith("trial-"))
    assert states["trial-000"].endswith(": completed, test accuracy 0.9000")
    assert states["trial-001"].endswith(": diverged, test accuracy 0.9000")
    assert states["trial-002"].endswith(f": failed (CANCELLED; resumes after ckpt-00001; log: {logs / '77_2.out'})")
    assert states["trial-003"].endswith(": running") and states["trial-004"].endswith(": pending")
    assert states["trial-005"].endswith(f": failed (FAILED; log: {logs / '77_5.out'})")


def test_a_site_profile_in_job_shapes_every_trials_job_and_a_bad_one_is_one_line(tmp_path, capsys):
    """[job] site = a profile: the array script carries its partition, GPUs and modules; the [job] keys
    given beside it override it; a profile that cannot be read is refused before anything is written."""
    module = launcher()
    path = sweep_file(tmp_path, f'[base]\nmodel = "simple"\n[grid]\nlr = [0.1, 0.2]\n[job]\nnodes = 2\n'
                                f'site = "{REPO / "slurm" / "sites" / "gpu4.toml"}"\n')
    options = module.build_parser().parse_args(["submit", str(path), "--dry-run"])
    assert module.cmd_submit(sweep.load(path), options) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --constraint=a100", "#SBATCH --nodes=2", "#SBATCH --array=0-1%2"):
        assert line + "\n" in script, line
    assert "module load cuda/12.4 openmpi/4.1.6" in script

    bad = sweep_file(tmp_path, '[base]\nmodel = "simple"\n[grid]\nlr = [0.1]\n[job]\nsite = "/no/such/site.toml"\n')
    result = subprocess.run([sys.executable, str(REPO / "launchers" / "sweep.py"), "submit", str(bad), "--dry-run"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --site /no/such/site.toml: cannot read it (No such file or directory)"], result.stderr
    assert not (tmp_path / "out").exists()


def test_submitit_sweep_trials_are_the_checkpointable_ranks_submit_py_uses(tmp_path, monkeypatch):
    """`--backend submitit` maps submitting.Ranks (submitit's Checkpointable: a preempted task is requeued
    and resumes, tested through submit.py in tests/slurm/test_submit.py) over the trials, one per trial,
    each writing its own metrics.json, at most `throttle` at once."""
    from mnist_hpc import submitting

    module = launcher()
    loaded = sweep.load(EXAMPLE, out=tmp_path / "out")
    calls = {}

    class FakeExecutor:
        cluster = "slurm"

        def map_array(self, function, specs, results):
            calls.update(function=function, specs=specs, results=results)
            return [type("Job", (), {"job_id": f"9_{i}", "paths": type("P", (), {"stderr": f"log{i}"})})()
                    for i in range(len(specs))]

    def fake_executor(spec, folder, setup, array_parallelism=None):
        calls["parallelism"] = array_parallelism
        return FakeExecutor()

    monkeypatch.setattr(submitting, "make_executor", fake_executor)
    record, jobs = module.submit_submitit(loaded, list(loaded.trials), module.job_spec(loaded), 2, [])
    assert isinstance(calls["function"], submitting.Ranks) and isinstance(calls["function"],
                                                                            submitit.helpers.Checkpointable)
    assert calls["results"] == [str(t.run_dir / "metrics.json") for t in loaded.trials] and calls["parallelism"] == 2
    assert [s.args[s.args.index("--config") + 1] for s in calls["specs"]] == [
        str(t.run_dir / "config.toml") for t in loaded.trials]
    assert record["job"] == "9" and len(jobs) == 6
