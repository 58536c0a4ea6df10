"""Everything Horovod: init, ranks, GPU pinning, thread layout, knobs and all-reduce helpers.

The same code runs as one plain process (world size 1), under ``horovodrun``, ``mpirun`` and
``srun --mpi=pmix``. Import order matters: :func:`init` must run before TensorFlow executes any op
(threading and visible devices are fixed at first use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from .options import non_negative_float, option, positive_float


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int

    @property
    def is_root(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class HorovodKnobs:
    """Horovod tuning passed through as its environment variables (read at ``hvd.init``)."""

    fusion_threshold_mb: float | None = option(None, "Horovod's tensor fusion buffer in MiB (HOROVOD_FUSION_THRESHOLD)",
                                               type=non_negative_float)
    cycle_time_ms: float | None = option(None, "Horovod's cycle time in ms (HOROVOD_CYCLE_TIME)", type=positive_float)
    timeline: str | None = option(None, "write a Horovod timeline to this JSON file (HOROVOD_TIMELINE; rank 0)",
                                  type=str)

    def environment(self) -> dict[str, str]:
        env = {}
        if self.fusion_threshold_mb is not None:
            env["HOROVOD_FUSION_THRESHOLD"] = str(int(self.fusion_threshold_mb * 1024 * 1024))
        if self.cycle_time_ms is not None:
            env["HOROVOD_CYCLE_TIME"] = str(self.cycle_time_ms)
        if self.timeline:
            env["HOROVOD_TIMELINE"] = self.timeline
        return env


# ------------------------------------------------------------------ threads
def cpus_per_rank(local_size: int, environ: dict[str, str] | None = None,
                  affinity: set[int] | None = None, cpu_count: int | None = None) -> int:
    """CPUs this rank owns: ``$SLURM_CPUS_PER_TASK``, else its CPU affinity mask.

    An MPI launcher that binds ranks (Open MPI binds to a core for np <= 2) gives each rank its
    own mask, used as it is; an unbound rank shares the whole machine with ``local_size - 1``
    others and takes an equal part of it.
    """
    environ = os.environ if environ is None else environ
    if environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(environ["SLURM_CPUS_PER_TASK"]))
    affinity = os.sched_getaffinity(0) if affinity is None else affinity
    cpu_count = os.cpu_count() or len(affinity) if cpu_count is None else cpu_count
    if len(affinity) >= cpu_count:  # unbound: share the node
        return max(1, len(affinity) // max(1, local_size))
    return max(1, len(affinity))


def intra_op_threads_for(requested: int | None, local_size: int) -> int:
    """``--threads N`` if given (it wins over $SLURM_CPUS_PER_TASK and the mask), else :func:`cpus_per_rank`."""
    return requested or cpus_per_rank(local_size)


def configure_threads(intra_op: int, inter_op: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)


# ------------------------------------------------------------------ GPUs
class DeviceConfig(Protocol):
    """The part of ``tf.config`` that GPU pinning uses (faked in tests)."""

    def list_physical_devices(self, device_type: str) -> list[Any]: ...
    def set_visible_devices(self, devices: Any, device_type: str) -> None: ...

    class experimental:  # noqa: N801 - mirrors tf.config.experimental
        @staticmethod
        def set_memory_growth(device: Any, enable: bool) -> None: ...


def gpu_index(local_rank: int, n_gpus: int) -> int | None:
    """The GPU a rank uses: one GPU per local rank.

    With one visible GPU (the scheduler already gave each task its own, e.g. ``--gpus-per-task=1``
    or ``--gpu-bind=single:1``) every rank uses it; with several, local rank r takes GPU r.
    """
    if n_gpus == 0:
        return None
    if n_gpus == 1:
        return 0
    if local_rank >= n_gpus:
        raise RuntimeError(f"local rank {local_rank} has no GPU of its own: {n_gpus} visible; "
                           "launch at most one task per GPU (--ntasks-per-node <= --gpus-per-node)")
    return local_rank


def pin_gpu(local_rank: int, config: DeviceConfig | None = None) -> Any | None:
    """Enable memory growth on all visible GPUs and make only this rank's GPU visible."""
    if config is None:
        import tensorflow as tf

        config = tf.config
    gpus = config.list_physical_devices("GPU")
    for gpu in gpus:
        config.experimental.set_memory_growth(gpu, True)
    index = gpu_index(local_rank, len(gpus))
    if index is None:
        return None
    config.set_visible_devices(gpus[index], "GPU")
    return gpus[index]


# ------------------------------------------------------------------ init
# A CPU rank owns few cores: Horovod's background loop (1 ms cycle by default) and Open MPI's
# busy-polling otherwise take them from TensorFlow. Measured on 2 cores, 2 ranks: 0.79 -> ~1.1x
# the throughput of one rank (benchmarks/RESULTS.md). Set either variable to override.
DEFAULT_CPU_CYCLE_TIME_MS = 5.0  # for steps of tens of ms (the CNN); a model with sub-ms steps wants less
CPU_YIELD = {"OMPI_MCA_mpi_yield_when_idle": "1"}


def cpu_rank_environment(n_gpus: int, environ: dict[str, str],
                         cycle_time_ms: float = DEFAULT_CPU_CYCLE_TIME_MS) -> dict[str, str]:
    """The defaults a CPU-only rank adds to its environment (nothing a user set is changed)."""
    if n_gpus:
        return {}
    defaults = {"HOROVOD_CYCLE_TIME": f"{cycle_time_ms:g}", **CPU_YIELD}
    return {key: value for key, value in defaults.items() if key not in environ}


def init(knobs: HorovodKnobs = HorovodKnobs(), intra_op_threads: int | None = None,
         inter_op_threads: int = 2, cpu_cycle_time_ms: float = DEFAULT_CPU_CYCLE_TIME_MS) -> World:
    """Initialise Horovod, pin this rank's GPU and set its thread layout; return the world."""
    import tensorflow as tf

    from .stack import check_runtime_keras

    # Horovod: its Keras layer needs Keras 2; under Keras 3 ranks would silently train apart.
    check_runtime_keras(tf)
    os.environ.update(knobs.environment())
    n_gpus = len(tf.config.list_physical_devices("GPU"))
    os.environ.update(cpu_rank_environment(n_gpus, dict(os.environ), cpu_cycle_time_ms))
    import horovod.tensorflow.keras as hvd

    hvd.init()
    world = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())
    pin_gpu(world.local_rank)
    configure_threads(intra_op_threads_for(intra_op_threads, world.local_size), inter_op_threads)
    return world


def hvd_module():
    """``horovod.tensorflow.keras``, for callbacks and the distributed optimizer."""
    import horovod.tensorflow.keras as hvd

    return hvd


# ------------------------------------------------------------------ collectives
def allreduce_sum(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """Exact element-wise SUM over all ranks, in float64 (counts stay exact up to 2**53)."""
    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    tensor = tf.constant(np.asarray(values, dtype=np.float64))
    if hvd_tf.size() == 1:
        return tensor.numpy()
    return hvd_tf.allreduce(tensor, op=hvd_tf.Sum, name=name).numpy()


def broadcast_object(obj: Any, name: str) -> Any:
    """Rank 0's ``obj`` on every rank."""
    import horovod.tensorflow as hvd_tf

    if hvd_tf.size() == 1:
        return obj
    return hvd_tf.broadcast_object(obj, root_rank=0, name=name)


def broadcast_variables(variables: Sequence[Any]) -> None:
    """Overwrite ``variables`` on every rank with rank 0's values."""
    import horovod.tensorflow as hvd_tf

    if hvd_tf.size() > 1 and variables:
        hvd_tf.broadcast_variables(list(variables), root_rank=0)


def barrier() -> None:
    import horovod.tensorflow as hvd_tf

    if hvd_tf.size() > 1:
        hvd_tf.allreduce(np.zeros(1), op=hvd_tf.Sum, name="barrier")


def gather_object(obj: Any, name: str) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    import horovod.tensorflow as hvd_tf

    if hvd_tf.size() == 1:
        return [obj]
    return list(hvd_tf.allgather_object(obj, name=name))


def gather_hostnames() -> list[str]:
    """The host name of every rank, in rank order."""
    import socket

    return gather_object(socket.gethostname(), "hostnames")


def weights_digest(weights: Sequence[np.ndarray]) -> str:
    """SHA-256 of the weights' bytes: equal on every rank iff the ranks hold the same model."""
    import hashlib

    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
