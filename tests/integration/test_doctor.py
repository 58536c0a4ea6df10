"""mnist-hpc doctor: one process, every rank under mpirun and horovodrun (under srun: tests/slurm/test_jobspec.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


from conftest import REPO, launch
from mnist_hpc import precision


def test_doctor_in_one_process_text_and_json():
    text = subprocess.run([sys.executable, "-m", "mnist_hpc", "doctor"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "1 rank on 1 node, CPU only, MPI all-reduce"
    assert any("--precision auto would pick" in line for line in lines)
    found = json.loads(subprocess.run([sys.executable, "-m", "mnist_hpc", "doctor", "--json"], capture_output=True,
                                      text=True, timeout=120, cwd=REPO, check=True).stdout)
    (rank,) = found["ranks"]
    assert rank["keras2"] and rank["gpus"] == [] and rank["horovod_built"]["mpi"] and rank["horovod_built"]["gloo"]
    assert rank["versions"]["keras"].split()[1].startswith("2.")
    assert set(rank["cpu"]["features"]) <= set(precision.CPU_FLAGS) and rank["cpu"]["intra_op_threads"] >= 1
    assert rank["precision_auto"] in ("bf16", "fp32") and rank["tensorflow_build"]["is_cuda_build"] in (True, False)


def test_doctor_reports_every_rank_under_mpirun():
    result = launch(2, "doctor", "--json")
    found = json.loads(result.stdout[result.stdout.index("{"):])  # after the launcher's '+ mpirun ...' line
    assert found["summary"] == "2 ranks on 1 node, CPU only, MPI all-reduce"
    assert [r["rank"] for r in found["ranks"]] == [0, 1] and [r["local_rank"] for r in found["ranks"]] == [0, 1]
    assert all(r["cpu"]["cpus_of_this_rank"] == 1 for r in found["ranks"])  # mpirun binds one core per rank


def test_doctor_under_horovodrun_gloo():
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    result = subprocess.run([horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, "-m", "mnist_hpc",
                             "doctor"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 ranks on 1 node, CPU only, Gloo all-reduce" in result.stdout
