"""``mnist-hpc doctor``: what this node, or every rank of a job, has, and whether it can train.

One process reports this node. Under a launcher (``mpirun``, ``srun``, ``horovodrun``) every rank
reports and rank 0 prints them together, under one summary line such as
"4 ranks on 2 nodes, one GPU each, NCCL all-reduce". It runs after the CLI has checked that
Keras 2 will be ``tf.keras`` and initialises Horovod as training would (GPU pinning, threads).
"""

from __future__ import annotations

import json
import os
import platform
import socket
from collections import Counter
from typing import Any

from . import distributed, precision, stack

SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS",
                   "SLURM_NTASKS_PER_NODE", "SLURM_CPUS_PER_TASK", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_ON_NODE",
                   "SLURM_PROCID", "SLURM_LOCALID", "CUDA_VISIBLE_DEVICES")


def gpus(tf: Any) -> list[dict[str, Any]]:
    """The GPUs this rank sees (after pinning: its own), with name and compute capability."""
    found = []
    for device in tf.config.get_visible_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        found.append({"device": device.name, "name": details.get("device_name", "unknown"),
                      "compute_capability": ".".join(map(str, capability)) if capability else None})
    return found


def horovod_build() -> dict[str, bool]:
    """What Horovod was built with (``horovodrun --check-build`` as data)."""
    import horovod.tensorflow as hvd

    return {"tensorflow": True, "mpi": hvd.mpi_built(), "gloo": hvd.gloo_built(), "nccl": hvd.nccl_built(),
            "cuda": hvd.cuda_built()}


def rank_report(world: distributed.World) -> dict[str, Any]:
    """Everything this rank would train with."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    visible = gpus(tf)
    build = tf.sysconfig.get_build_info()
    _, keras_version = stack.keras_of(tf)
    return {
        "rank": world.rank, "local_rank": world.local_rank, "host": socket.gethostname(),
        "versions": stack.versions(), "keras2": keras_version.startswith("2."),
        stack.LEGACY_KERAS: os.environ.get(stack.LEGACY_KERAS),
        "cpu": {"model": platform.processor() or platform.machine(), "features": precision.cpu_features(),
                "cpus_of_this_rank": distributed.cpus_per_rank(world.local_size),
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()},
        "gpus": visible,
        "tensorflow_build": {"cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
                             "is_cuda_build": bool(build.get("is_cuda_build"))},
        "horovod_built": horovod_build(),
        "horovod_controller": "mpi" if hvd.mpi_enabled() else "gloo" if hvd.gloo_enabled() else "none",
        "precision_auto": precision.choose_precision("auto", precision.gpu_compute_capability(tf)),
        "slurm": {name: os.environ[name] for name in SLURM_VARIABLES if name in os.environ},
    }


def summary(reports: list[dict[str, Any]]) -> str:
    """One line for the whole job, e.g. '4 ranks on 2 nodes, one GPU each, NCCL all-reduce'."""
    hosts = Counter(r["host"] for r in reports)
    with_gpu = [r for r in reports if r["gpus"]]
    if not with_gpu:
        devices = "CPU only"
    elif len(with_gpu) == len(reports):
        per_gpu = Counter((r["host"], r["gpus"][0]["device"], (r["slurm"].get("CUDA_VISIBLE_DEVICES"))) for r in reports)
        devices = "one GPU each" if all(n == 1 for n in per_gpu.values()) else "GPUs shared between ranks"
    else:
        devices = f"{len(with_gpu)} of {len(reports)} ranks with a GPU"
    nccl = with_gpu and len(with_gpu) == len(reports) and all(r["horovod_built"]["nccl"] for r in reports)
    controllers = {r["horovod_controller"] for r in reports}
    reduction = "NCCL" if nccl else "/".join(sorted(c.upper() if c == "mpi" else c.capitalize() for c in controllers))
    ranks = f"{len(reports)} rank{'s' if len(reports) != 1 else ''}"
    nodes = f"{len(hosts)} node{'s' if len(hosts) != 1 else ''}"
    keras = "" if all(r["keras2"] for r in reports) else "; KERAS 3 ON SOME RANKS: gradients would not be averaged"
    return f"{ranks} on {nodes}, {devices}, {reduction} all-reduce{keras}"


def text(reports: list[dict[str, Any]]) -> str:
    lines = [summary(reports)]
    for r in reports:
        v, cpu = r["versions"], r["cpu"]
        gpu = ", ".join(f"{g['name']} (compute {g['compute_capability']})" for g in r["gpus"]) or "none"
        built = ", ".join(name for name, ok in r["horovod_built"].items() if ok)
        lines += [
            f"rank {r['rank']} on {r['host']} (local rank {r['local_rank']})",
            f"  python {v['python']}, tensorflow {v['tensorflow']}, {v['keras']} "
            f"({'Keras 2' if r['keras2'] else 'Keras 3: NOT USABLE'}; {stack.LEGACY_KERAS}={r[stack.LEGACY_KERAS]})",
            f"  horovod {v['horovod']} built with {built}; controller {r['horovod_controller']}; {v['mpi']}",
            f"  cpu {cpu['model']} [{' '.join(cpu['features']) or 'no AVX-512/AMX'}], {cpu['cpus_of_this_rank']} CPUs "
            f"for this rank, {cpu['intra_op_threads']} intra-op threads",
            f"  gpu {gpu}; tensorflow built with CUDA {r['tensorflow_build']['cuda'] or '-'}, "
            f"cuDNN {r['tensorflow_build']['cudnn'] or '-'}",
            f"  --precision auto would pick {r['precision_auto']}",
        ]
        if r["slurm"]:
            lines.append("  " + " ".join(f"{k}={v}" for k, v in r["slurm"].items()))
    return "\n".join(lines)


def main(as_json: bool) -> int:
    world = distributed.init()
    reports = distributed.gather_object(rank_report(world), "doctor")
    if world.is_root:
        print(json.dumps({"summary": summary(reports), "ranks": reports}, indent=2) if as_json else text(reports))
    if not all(r["keras2"] for r in reports):
        raise stack.StackError("tf.keras is not Keras 2 on every rank (see above)")
    return 0
