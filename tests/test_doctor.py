"""mnist-hpc doctor: one process, every rank under mpirun and horovodrun (under srun: test_slurm.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, launch
from mnist_hpc import doctor


def fake_rank(rank, host, gpu=None, visible=None, nccl=True, controller="mpi", keras2=True):
    return {"rank": rank, "host": host, "keras2": keras2, "controller": controller,
            "gpus": [{"device": gpu, "name": "NVIDIA H100", "compute_capability": "9.0"}] if gpu else [],
            "horovod_built": {"nccl": nccl}, "horovod_controller": controller,
            "slurm": {"CUDA_VISIBLE_DEVICES": visible} if visible is not None else {}}


@pytest.mark.parametrize("reports,expected", [
    ([fake_rank(0, "a")], "1 rank on 1 node, CPU only, MPI all-reduce"),
    ([fake_rank(0, "a", controller="gloo"), fake_rank(1, "a", controller="gloo")],
     "2 ranks on 1 node, CPU only, Gloo all-reduce"),
    ([fake_rank(r, f"n{r // 2}", f"/physical_device:GPU:{r % 2}") for r in range(4)],
     "4 ranks on 2 nodes, one GPU each, NCCL all-reduce"),
    ([fake_rank(r, "n0", "/physical_device:GPU:0", visible=str(r)) for r in range(2)],  # --gpus-per-task=1
     "2 ranks on 1 node, one GPU each, NCCL all-reduce"),
    ([fake_rank(r, "n0", "/physical_device:GPU:0") for r in range(2)],
     "2 ranks on 1 node, GPUs shared between ranks, NCCL all-reduce"),
    ([fake_rank(r, "n0", "/physical_device:GPU:0", nccl=False, visible=str(r)) for r in range(2)],
     "2 ranks on 1 node, one GPU each, MPI all-reduce"),
    ([fake_rank(0, "n0", "/physical_device:GPU:0"), fake_rank(1, "n1")],
     "2 ranks on 2 nodes, 1 of 2 ranks with a GPU, MPI all-reduce"),
    ([fake_rank(0, "a", keras2=False)], "1 rank on 1 node, CPU only, MPI all-reduce; KERAS 3 ON SOME RANKS"),
])
def test_summary_line(reports, expected):
    assert doctor.summary(reports).startswith(expected)


def test_cpu_features():
    assert doctor.cpu_features("flags : fpu avx2 avx512f avx512_bf16 amx_tile\n") == [
        "avx2", "avx512f", "avx512_bf16", "amx_tile"]
    assert doctor.cpu_features("flags : fpu sse2\n") == []


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
    assert set(rank["cpu"]["features"]) <= set(doctor.CPU_FLAGS) and rank["cpu"]["intra_op_threads"] >= 1
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
