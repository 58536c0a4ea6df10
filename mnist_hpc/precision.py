"""What the hardware offers and the training precision chosen from it (doctor and train ask here).

``cpuinfo`` and the device lists are seams for tests: GPU paths are checked against faked ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # what decides CPU speed and bf16
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}
ALL = ("fp32", "bf16", "fp16")


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The CPU flags of :data:`CPU_FLAGS` this machine has."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = set(cpuinfo.split())
    return [flag for flag in CPU_FLAGS if flag in flags]


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    return bool(set(cpu_features(cpuinfo)) & BF16_CPU_FLAGS)


def gpu_compute_capability(tf: Any) -> tuple[int, int] | None:
    """The first visible GPU's compute capability (after pinning: this rank's own), or None."""
    gpus = tf.config.get_visible_devices("GPU")
    if not gpus:
        return None
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    return tuple(capability) if capability else None


def choose_precision(requested: str, gpu_compute_capability: tuple[int, int] | None,
                     cpuinfo: str | None = None, allowed: tuple[str, ...] = ALL) -> str:
    """Resolve ``auto`` among ``allowed`` (the model's): bf16 on Ampere+ GPUs and bf16-capable CPUs,
    fp16 on older GPUs, else fp32."""
    if requested != "auto":
        return requested
    if gpu_compute_capability is not None:
        best = "bf16" if gpu_compute_capability >= (8, 0) else "fp16"
    else:
        best = "bf16" if cpu_supports_bf16(cpuinfo) else "fp32"
    return best if best in allowed else "fp32"
