"""mnist-hpc doctor: the summary line of every rank layout (faked reports)."""

from __future__ import annotations


import pytest

from mnist_hpc import doctor, precision


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
    assert precision.cpu_features("flags : fpu avx2 avx512f avx512_bf16 amx_tile\n") == [
        "avx2", "avx512f", "avx512_bf16", "amx_tile"]
    assert precision.cpu_features("flags : fpu sse2\n") == []
