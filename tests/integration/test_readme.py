"""Every command in a README code block is run by the suite, or listed here as not run with the reason.

Adding a command to the README without an entry below fails `test_every_readme_command_is_accounted_for`.
Entries are ("test", "FILE::FUNCTION") for a test that runs it (shortened where its flags allow),
("here", extra arguments) for a command run by `test_readme_command_runs` below, or ("not run", reason).
"""

from __future__ import annotations

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
    "mnist-hpc bench peak": ("here", []),
    "mnist-hpc bench allreduce": ("test", "integration/test_bench.py::test_measured_allreduce"),
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


def readme_commands() -> list[str]:
    """Each command line of the README's ```bash blocks, without its trailing comment."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
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
    if "smoke" in argv:
        summary = result.stdout[result.stdout.index("smoke training finished"):]
        assert summary.count("test accuracy") == 2 and "simple" in summary and "cnn" in summary
    if "doctor" in argv:
        assert "1 rank on 1 node" in result.stdout
    if "verify" in argv:
        assert "MNIST OK" in result.stdout
