"""Every command in a code block of the README (and of docs/*.md) is run by the suite, or listed here
as not run with the reason.

Adding a command to those pages without an entry below fails `test_every_readme_command_is_accounted_for`.
Entries are ("test", "FILE::FUNCTION") for a test that runs it (shortened where its flags allow),
("here", extra arguments) for a command run by `test_readme_command_runs` below, or ("not run", reason).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

VENV_BIN = Path(sys.executable).parent
COMMANDS: dict[str, tuple] = {
    "make smoke": ("not run", "the README's set-up command: the clean-clone check before each stop runs it; "
                              "its launcher is run here as `launchers/local.py smoke`"),
    "make test": ("not run", "this suite itself (.ci/run)"),
    "source .venv/bin/activate": ("not run", "changes the calling shell; the suite runs this venv's python and "
                                             "console scripts by their paths"),
    "python launchers/local.py --np 2 train --model cnn --out runs/cnn":
        ("test", "integration/test_train.py::test_the_default_cnn_recipe_reaches_99_4_percent_on_two_ranks"),
    "mnist-hpc evaluate runs/cnn": ("test", "integration/test_train.py::test_aggregated_evaluation_is_exact_across_world_sizes"),
    "mnist-hpc slurm render train_cnn --time 30 > train_cnn.sbatch": ("here", []),
    'MNIST_HPC_ARGS="--epochs 2" sbatch train_cnn.sbatch':
        ("test", "slurm/test_jobspec.py::test_train_cnn_template_runs_on_two_nodes"),
    "make setup GPU=1": ("not run", "6 GB of CUDA wheels: `make gpu-build-check` runs it (tests/gpu_build_check.py)"),
    "make gpu-build-check": ("not run", "downloads gigabytes; run before resolving GPU work and when a stack changes"),
    "make gpu-acceptance GPU=1": ("test", "integration/test_gpu_acceptance.py::test_on_a_cpu_machine_every_gpu_step_is_skipped"),
    "bash scripts/gpu_acceptance.sh --out runs/acceptance":
        ("test", "integration/test_gpu_acceptance.py::test_on_a_cpu_machine_every_gpu_step_is_skipped"),
    ".venv/bin/mnist-hpc doctor": ("here", []),
    ".venv/bin/python launchers/local.py --np 2 doctor --json":
        ("test", "integration/test_doctor.py::test_doctor_reports_every_rank_under_mpirun"),
    "srun --mpi=pmix python -m mnist_hpc doctor": ("test", "slurm/test_jobspec.py::test_doctor_under_srun_reports_both_nodes"),
    ".venv/bin/mnist-hpc data fetch --dir /scratch/$USER/mnist":
        ("test", "integration/test_data.py::test_fetch_falls_back_over_404_and_corrupted_mirrors"),
    ".venv/bin/mnist-hpc data verify --dir /scratch/$USER/mnist": ("here", []),
    "mnist-hpc train --model {simple,cnn} [--recipe {default,seed}] [--epochs N | --steps N]":
        ("not run", "a usage synopsis, not a command"),
    "[--batch-size PER_RANK] [--lr BASE] [--out RUN_DIR] [--resume {auto,never,PATH}]":
        ("not run", "a usage synopsis, not a command"),
    "[--data-dir D] [--seed S] [--precision {auto,fp32,bf16,fp16}] [--dry-run] ...":
        ("not run", "a usage synopsis, not a command"),
    ".venv/bin/python launchers/local.py --np 2 train --model cnn --epochs 1 --out runs/cnn":
        ("test", "conftest.py::cnn_run"),
    ".venv/bin/python launchers/local.py smoke": ("here", []),
    ".venv/bin/horovodrun --gloo -np 2 -H localhost:2 .venv/bin/python -m mnist_hpc train --model simple --epochs 1":
        ("test", "integration/test_stack.py::test_gloo_and_mpi_runs_end_with_identical_weights_on_both_ranks"),
    "export MNIST_HPC_DATA=/scratch/$USER/mnist": ("not run", "sets a variable; the SLURM tests set it"),
    'MNIST_HPC_ARGS="--epochs 2" sbatch slurm/train_simple.sbatch': ("test", "slurm/test_jobspec.py::test_train_simple_template"),
    'MNIST_HPC_ARGS="--steps 200" sbatch slurm/train_cnn.sbatch':
        ("test", "slurm/test_jobspec.py::test_train_cnn_template_runs_on_two_nodes"),
    'MNIST_HPC_ARGS="--epochs 3" sbatch --nodes=2 slurm/train_simple.sbatch':
        ("test", "slurm/test_jobspec.py::test_a_dead_rank_fails_the_sbatch_job_fast_and_a_resubmission_resumes"),
    "scancel --batch --signal=USR1 <jobid>": ("test", "slurm/test_jobspec.py::test_signal_checkpoints_requeues_and_resumes"),
    ".venv/bin/python launchers/submit.py --nodes 2 --ntasks-per-node 1 --time 20 --wait -- --model simple --epochs 2":
        ("test", "slurm/test_submit.py::test_submitit_launcher_trains_on_two_nodes"),
    '.venv/bin/python launchers/submit.py --dry-run --nodes 4 --ntasks-per-node 4 --gpus-per-node 4 --partition gpu '
    '--account myproject --setup "module load openmpi" -- --model cnn':
        ("test", "slurm/test_jobspec.py::test_readme_gpu_examples_render_as_documented"),
    "mnist-hpc bench throughput --model cnn --batch-size 128 [--synthetic] [--precision bf16] [--out r.json]":
        ("here", ["--synthetic", "--windows", "1", "--window-steps", "5", "--warmup-steps", "2"]),
    "mnist-hpc bench throughput --model cnn --compare-plain":
        ("test", "integration/test_bench.py::test_horovod_and_plain_keras_measured_in_one_run"),
    ".venv/bin/mnist-hpc slurm render train_cnn --site slurm/sites/pmi2.toml --nodes 4 > cnn.sbatch && sbatch cnn.sbatch":
        ("not run", "pmi2 cannot start ranks on the local cluster (its Open MPI speaks PMIx only); the rendering is "
                    "unit/test_jobspec.py::test_the_pmi2_example_launches_with_srun_mpi_pmi2"),
    ".venv/bin/python launchers/submit.py --site slurm/sites/gpu4.toml --nodes 2 -- --model cnn":
        ("not run", "needs GPU nodes; what it submits is unit/test_site.py::test_submitit_gets_the_profile_and_the_overrides"),
    ".venv/bin/python launchers/scaling.py --site slurm/sites/gpu4.toml --node-counts 1 2 4 -- --model cnn --synthetic":
        ("not run", "needs GPU nodes; scaling.py with a profile is unit/test_site.py::test_submitit_refuses_an_mpirun_site_in_one_line"),
    "slurm/scaling_sweep.sh --site slurm/sites/generic-pmix.toml 1 2 4":
        ("test", "slurm/test_jobspec.py::test_scaling_sweep_script_with_a_site_profile"),
    ".venv/bin/mnist-hpc train --config run.toml --seed 3":
        ("test", "unit/test_options.py::test_a_config_file_plus_an_override_is_the_run_the_options_give"),
    ".venv/bin/mnist-hpc train --config runs/cnn/20261202-031500/config.toml":
        ("test", "unit/test_options.py::test_a_runs_config_toml_repeats_the_run"),
    ".venv/bin/python launchers/sweep.py submit slurm/sweeps/softmax-lr.toml":
        ("test", "slurm/test_sweep.py::test_a_sweep_is_one_array_a_killed_trial_recovers_by_resubmission_and_the_report_names_the_best"),
    ".venv/bin/python launchers/sweep.py submit slurm/sweeps/softmax-lr.toml --dry-run":
        ("test", "unit/test_sweep.py::test_the_array_script_maps_each_task_to_a_trial_and_keeps_the_templates_requeue"),
    ".venv/bin/python launchers/sweep.py submit slurm/sweeps/softmax-lr.toml --backend submitit --wait":
        ("test", "slurm/test_sweep.py::test_the_same_sweep_runs_through_submitit"),
    ".venv/bin/python launchers/sweep.py status slurm/sweeps/softmax-lr.toml":
        ("test", "slurm/test_sweep.py::test_a_sweep_is_one_array_a_killed_trial_recovers_by_resubmission_and_the_report_names_the_best"),
    ".venv/bin/python launchers/sweep.py report slurm/sweeps/softmax-lr.toml":
        ("test", "slurm/test_sweep.py::test_a_sweep_is_one_array_a_killed_trial_recovers_by_resubmission_and_the_report_names_the_best"),
    "mnist-hpc train --model cnn --target-accuracy 0.9925 --eval-every 0.25":
        ("test", "integration/test_tta.py::test_study_runs_each_trial_once_and_reports_its_metrics"),
    "mnist-hpc bench tta --out runs/tta-study -- --precision bf16":
        ("test", "unit/test_tta.py::test_mnist_hpc_bench_tta_is_the_same_study"),
    "bash benchmarks/run.sh tta-study": ("not run", "hours of training (benchmarks/RESULTS.md has its results); its "
                                                    "machinery is integration/test_tta.py"),
    "mnist-hpc bench peak": ("here", []),
    "mnist-hpc bench allreduce": ("test", "integration/test_bench.py::test_measured_allreduce"),
    "mnist-hpc bench project --studies DIR... --out runs/projection":
        ("test", "unit/test_projection.py::test_bench_project_writes_the_table_the_json_and_the_plot"),
    "mnist-hpc train --model cnn --epochs 4 --augment 1 --target-accuracy 0.9925":
        ("test", "integration/test_bench.py::test_time_to_accuracy_stops_at_the_target"),
    "python launchers/local.py --np 2 sweep -- --model cnn": ("test", "integration/test_bench.py::test_local_strong_scaling_sweep_compares_with_plain_keras"),
    "python launchers/local.py --np 2 --global-batch 256 sweep -- --model cnn":
        ("test", "integration/test_bench.py::test_local_strong_scaling_sweep_compares_with_plain_keras"),
    "python benchmarks/plain_keras.py --model cnn --precision bf16": ("here", ["--epochs", "1", "--model", "simple"]),
    "slurm/scaling_sweep.sh 1 2 4 8": ("test", "slurm/test_jobspec.py::test_scaling_sweep_script_and_its_report_job"),
    "python launchers/scaling.py --node-counts 1 2 4 -- --model cnn --synthetic":
        ("test", "slurm/test_submit.py::test_submitit_scaling_sweep"),
}


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]  # the README and what it links to in docs/


def readme_commands() -> list[str]:
    """Each command line of the ```bash blocks of the README and docs/*.md, without its trailing comment."""
    commands = []
    text = "\n".join(page.read_text() for page in PAGES)
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#\s", line.strip())[0].strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def test_every_readme_command_is_accounted_for():
    commands = readme_commands()
    unlisted = [c for c in commands if c not in COMMANDS]
    assert not unlisted, f"README commands neither run by a test nor listed as not run: {unlisted}"
    stale = [c for c in COMMANDS if c not in commands]
    assert not stale, f"entries for commands no longer in the README: {stale}"
    for command, (kind, detail) in COMMANDS.items():
        assert kind in ("test", "here", "not run"), command
        if kind == "test":
            file, name = detail.split("::")
            source = (REPO / "tests" / file).read_text()
            assert re.search(rf"^def {name}\(", source, re.M), f"{command}: {detail} does not exist"
        if kind == "not run":
            assert len(detail) > 10, f"{command}: give the reason it is not run"


HERE = [c for c, (kind, _) in COMMANDS.items() if kind == "here"]


@pytest.mark.parametrize("command", HERE)
def test_readme_command_runs(command, tmp_path, mnist_dir):
    """The README's command as written (this venv's paths, a temporary --dir/--out), shortened by flags."""
    extra = COMMANDS[command][1]
    argv = shlex.split(command.replace("/scratch/$USER/mnist", str(mnist_dir)))
    argv = [a for a in argv if not (a.startswith("[") or a.endswith("]"))]  # optional parts of a synopsis
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "mnist-hpc":
        argv[0] = str(VENV_BIN / "mnist-hpc")  # the console script itself
    elif argv[0].startswith(".venv/bin/"):
        argv[0] = str(VENV_BIN / argv[0].removeprefix(".venv/bin/"))
    stdout_file = None
    if ">" in argv:  # the command's output into a file, as the shell would write it
        stdout_file = tmp_path / argv[argv.index(">") + 1]
        argv = argv[:argv.index(">")]
    if "smoke" in argv:
        extra = [*extra, "--out", str(tmp_path / "smoke")]
        argv = argv[:-1] + extra + ["smoke"]  # launcher options go before the command
    else:
        argv += extra
    if "plain_keras.py" in command:
        argv += ["--data-dir", str(mnist_dir), "--out", str(tmp_path / "plain.json")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**__import__("os").environ, "MNIST_HPC_DATA": str(mnist_dir)})
    assert result.returncode == 0, f"{argv}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    if stdout_file:
        stdout_file.write_text(result.stdout)
    if "smoke" in argv:
        summary = result.stdout[result.stdout.index("smoke training finished"):]
        assert summary.count("test accuracy") == 2 and "simple" in summary and "cnn" in summary
    if "doctor" in argv:
        assert "1 rank on 1 node" in result.stdout
    if "verify" in argv:
        assert "MNIST OK" in result.stdout
    if "peak" in argv:  # "fp32 matmul GFLOP/s of this process"
        peak = json.loads(result.stdout[result.stdout.index("{"):])
        assert peak["matmul_size"] > 0 and 0 < peak["gflops"] <= peak["gflops_max"], peak
    if "render" in argv:  # the quick start's job script: the template with the option given, ready for sbatch
        script = stdout_file.read_text()
        assert script.startswith("#!/bin/bash\n") and "#SBATCH --time=30\n" in script
        assert "#SBATCH --nodes=2\n" in script and "#SBATCH --ntasks-per-node=1\n" in script
        assert "srun --mpi=pmix" in script and "python -m mnist_hpc train --model cnn" in script
