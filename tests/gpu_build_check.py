"""The GPU (NCCL) build, checked on a machine without a GPU: `make gpu-build-check`.

Not part of `make test` (the environment is 6 GB of CUDA wheels): this file is run by name, by the
interpreter of .venv-gpu, and refuses to run anywhere else. It shows the build has NCCL and CUDA,
used the pinned compiler, and that the same environment still trains both models on CPU ranks
(a GPU build must not break CPU nodes). It writes what it measured to runs/gpu-build-check.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, launch, metrics_of

VENV = Path(sys.prefix)
pytestmark = pytest.mark.timeout(900)


def horovod_library() -> Path:
    import horovod.tensorflow

    return next(Path(horovod.tensorflow.__file__).parent.glob("mpi_lib*.so"))


def test_this_is_the_gpu_environment():
    assert VENV.name.endswith("-gpu"), f"run by {sys.executable}: `make gpu-build-check` runs this with .venv-gpu"


def test_check_build_shows_nccl_and_horovod_says_nccl_and_cuda():
    report = subprocess.run([str(VENV / "bin" / "horovodrun"), "--check-build"], capture_output=True, text=True,
                            timeout=120, check=True).stdout
    for line in ("[X] TensorFlow", "[X] MPI", "[X] Gloo", "[X] NCCL"):
        assert line in report, report
    code = "import horovod.tensorflow as hvd; print(hvd.nccl_built(), hvd.cuda_built(), hvd.mpi_built(), hvd.gloo_built())"
    nccl, cuda, mpi, gloo = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           timeout=120, check=True).stdout.split()
    assert int(nccl) >= 2000 and cuda == "True" and mpi == "True" and gloo == "True"


def test_horovod_links_the_nccl_and_cudart_of_the_wheels():
    """NCCL and the CUDA runtime resolve to the pip wheels TensorFlow uses (not a system copy)."""
    ldd = subprocess.run(["ldd", str(horovod_library())], capture_output=True, text=True, check=True).stdout
    nccl = re.search(r"libnccl\.so\.2 => (\S+)", ldd)
    assert nccl and "site-packages/nvidia/nccl" in str(Path(nccl.group(1)).resolve()), ldd
    assert "/usr/local/cuda" not in ldd, ldd


def test_the_pinned_compiler_built_it():
    """The build log (kept next to the cached wheel) names the assembled nvcc, never /usr/local/cuda."""
    logs = sorted((Path.home() / ".cache" / "mnist-hpc" / "wheels").glob("*/build.log"), key=lambda p: p.stat().st_mtime)
    gpu_logs = [log for log in logs if "HOROVOD_GPU_OPERATIONS=NCCL" in (log.parent / "KEY").read_text()]
    assert gpu_logs, "no cached GPU build: run `make setup GPU=1`"
    used = re.search(r"Check for working CUDA compiler: (\S+)", gpu_logs[-1].read_text()).group(1)
    assert "/cuda-toolkit/bin/nvcc" in used and not used.startswith("/usr/local"), used


def test_doctor_reports_the_gpu_build_on_two_ranks():
    printed = launch(2, "doctor", "--json").stdout
    report = json.loads(printed[printed.index("{"):])
    assert report["summary"] == "2 ranks on 1 node, CPU only, MPI all-reduce"
    for rank in report["ranks"]:
        assert rank["horovod_built"]["nccl"] and rank["horovod_built"]["cuda"] and rank["keras2"]
        assert rank["tensorflow_build"]["is_cuda_build"] and rank["gpus"] == []


@pytest.mark.parametrize("model,args,floor", [("simple", ("--epochs", "2"), 0.90),
                                              ("cnn", ("--steps", "300"), 0.97)])
def test_the_gpu_build_trains_on_two_cpu_ranks(model, args, floor, tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    launch(2, "train", "--model", model, *args, "--out", str(run_dir), "--data-dir", str(mnist_dir), timeout=900)
    metrics = metrics_of(run_dir)
    assert metrics["world_size"] == 2 and metrics["status"] == "completed"
    assert metrics["test_accuracy"] >= floor
    assert len(set(metrics["rank_weight_digests"])) == 1
    record({f"train_{model}_np2": {k: metrics[k] for k in ("test_accuracy", "images_per_second", "wall_seconds")}})


def test_record_build_time_and_size():
    size = subprocess.run(["du", "-sb", str(VENV)], capture_output=True, text=True, check=True).stdout.split()[0]
    toolkit = subprocess.run(["du", "-sb", str(VENV / "cuda-build")], capture_output=True, text=True,
                             check=True).stdout.split()[0]
    seconds = (VENV / "setup-seconds").read_text().strip() if (VENV / "setup-seconds").exists() else None
    record({"venv_bytes": int(size), "cuda_build_wheels_bytes": int(toolkit), "setup_seconds": seconds,
            "horovod_library": str(horovod_library())})
    assert int(size) > 2e9  # the CUDA wheels are there


def record(entries: dict) -> None:
    path = REPO / "runs" / "gpu-build-check.json"
    path.parent.mkdir(exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **entries}, indent=2) + "\n")
