"""Benchmarks: training throughput (Horovod and plain tf.keras), matmul peak, sweep reports.

Throughput is measured inside one ``fit`` per variant: a callback timestamps every step (Keras
syncs at each batch end when a callback asks for it), warm-up steps are dropped and the rest is
cut into windows; each window gives images/s per rank, and the ranks' rates are summed.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import time

from pathlib import Path
from typing import Any

import numpy as np

from . import data, distributed, models
from .config import BenchConfig  # noqa: F401 - bench.BenchConfig: its settings live with train's (config.py)
from .rundir import save_figure_atomic, write_text_atomic

def training_split(config: BenchConfig, world: distributed.World) -> data.Split:
    """MNIST's training images, or random ones in the model's layout (8 updates per rank)."""
    spec = models.spec(config.run.model)
    if not config.synthetic:
        return data.load(config.run.data_dir, layout=spec.layout).train
    rng = np.random.default_rng(world.rank)
    n = config.batch_size * config.backward_passes * 8 * world.size
    return data.Split(rng.random((n, *spec.input_shape), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32))


def model_and_input(config: BenchConfig, world: distributed.World, split: data.Split, horovod: bool = True):
    """Training's own compiled model and input pipeline for this config (train.model_and_input), and
    the precision training would choose here."""
    from . import train  # TensorFlow: not for `bench report`

    train_config = config.train_config(world.size)
    schedule = train.schedule_for(train_config, len(split), world)
    return (*train.model_and_input(train_config, schedule, world, split, horovod=horovod), schedule.precision)


def _timed_fit(model, dataset, steps: int) -> list[float]:
    """Timestamps at the start and after each graph call (one update: ``steps`` batches in all)."""
    import tensorflow as tf

    stamps: list[float] = []
    stamp = tf.keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: stamps.append(time.perf_counter()))
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[stamp])
    return [start, *stamps]


def _window_rates(stamps: list[float], config: BenchConfig) -> list[float]:
    """Images/s of this rank in each measurement window (warm-up dropped)."""
    rates = []
    for w in range(config.windows):
        first = config.warmup_steps + w * config.window_steps
        seconds = stamps[first + config.window_steps] - stamps[first]
        rates.append(config.window_steps * config.backward_passes * config.batch_size / seconds)
    return rates


def _summary(per_rank: list[float], config: BenchConfig, world: distributed.World, name: str) -> dict[str, Any]:
    """Sum each window over ranks, then median and spread over windows."""
    totals = distributed.allreduce_sum(per_rank, name=name)
    return {"images_per_second": statistics.median(totals), "images_per_second_min": float(min(totals)),
            "images_per_second_max": float(max(totals)), "windows": [float(t) for t in totals],
            "images_per_second_per_rank": statistics.median(totals) / world.size}


def throughput(config: BenchConfig) -> dict[str, Any]:
    """Training images/s of Horovod-wrapped Keras (and, with ``compare_plain``, of plain Keras)."""
    run = config.run
    world = distributed.init(run.knobs, run.intra_op_threads, run.inter_op_threads,
                             models.spec(run.model).cpu_cycle_time_ms)
    if config.compare_plain and world.size != 1:
        raise ValueError("--compare-plain measures one process: run it without a launcher")
    result: dict[str, Any] = {"config": config.summary(), "world_size": world.size,
                              "global_batch_size": world.size * config.batch_size * config.backward_passes,
                              "hosts": distributed.gather_hostnames()}
    split = training_split(config, world)  # read once: both variants time the same images
    variants = [("horovod", True)] + ([("plain", False)] if config.compare_plain else [])
    for name, wrapped in variants:
        model, dataset, result["config"]["precision"] = model_and_input(config, world, split, horovod=wrapped)
        stamps = _timed_fit(model, dataset, config.steps * config.backward_passes)
        result[name] = _summary(_window_rates(stamps, config), config, world, f"bench_{name}")
    if config.compare_plain:
        result["horovod_over_plain"] = result["horovod"]["images_per_second"] / result["plain"]["images_per_second"]
    result["images_per_second"] = result["horovod"]["images_per_second"]
    result["mflop_per_image"] = models.spec(run.model).mflop_per_image
    result["gflops"] = result["images_per_second"] * result["mflop_per_image"] / 1000
    return result


def matmul_peak(size: int = 2048, repeats: int = 20) -> dict[str, Any]:
    """fp32 matmul GFLOP/s of this process with TensorFlow's threads (median of ``repeats``)."""
    import tensorflow as tf

    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    tf.matmul(a, b).numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return {"matmul_size": size, "gflops": statistics.median(rates), "gflops_max": max(rates)}


# ------------------------------------------------------------------ reports
def report(results_dir: Path) -> Path:
    """Collect ``*.json`` throughput results of a sweep into CSV, JSON, Markdown and PNG plots."""
    rows = []
    for path in sorted(results_dir.glob("np*.json")):
        result = json.loads(path.read_text())
        rows.append({"workers": result["world_size"], "images_per_second": result["images_per_second"],
                     "min": result["horovod"]["images_per_second_min"],
                     "max": result["horovod"]["images_per_second_max"],
                     "batch_per_worker": result["config"]["batch_size"]})
    if not rows:
        raise ValueError(f"{results_dir}: no np*.json results to report")
    rows.sort(key=lambda r: r["workers"])
    base = rows[0]
    plain = json.loads((results_dir / f"np{base['workers']}.json").read_text()).get("plain")
    # weak scaling: the same batch per worker; strong scaling: the same global batch split among workers
    scaling = "weak" if len({r["batch_per_worker"] for r in rows}) == 1 else "strong"
    for row in rows:
        row["speedup"] = row["images_per_second"] / base["images_per_second"]
        row["efficiency"] = row["speedup"] / (row["workers"] / base["workers"])
        row["scaling"] = scaling
        if plain:  # plain tf.keras in one process at the same global batch, timed in the same sweep
            row["plain_images_per_second"] = plain["images_per_second"]
            row["over_plain"] = row["images_per_second"] / plain["images_per_second"]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(results_dir / "report.csv", table.getvalue())
    write_text_atomic(results_dir / "report.json", json.dumps(rows, indent=2) + "\n")
    extra = " plain tf.keras img/s | vs plain |" if plain else ""
    lines = [f"| workers | batch/worker | images/s (median) | min | max | speedup | {scaling}-scaling efficiency |"
             + extra, "|---|---|---|---|---|---|---|" + ("---|---|" if plain else "")]
    lines += [f"| {r['workers']} | {r['batch_per_worker']} | {r['images_per_second']:.0f} | {r['min']:.0f} | "
              f"{r['max']:.0f} | {r['speedup']:.2f} | {r['efficiency']:.2f} |"
              + (f" {r['plain_images_per_second']:.0f} | {r['over_plain']:.3f} |" if plain else "") for r in rows]
    markdown = results_dir / "report.md"
    write_text_atomic(markdown, "\n".join(lines) + "\n")
    plot(rows, results_dir)
    return markdown


def plot(rows: list[dict[str, Any]], folder: Path, prefix: str = "", title: str = "") -> list[Path]:
    """throughput.png (total images/s with the windows' min-max band) and efficiency.png of a report's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [r["workers"] for r in rows]
    written = []
    for key, label, name in (("images_per_second", "images/s (total)", "throughput.png"),
                             ("efficiency", "scaling efficiency", "efficiency.png")):
        figure, axes = plt.subplots(figsize=(5, 3.5))
        axes.plot(workers, [r[key] for r in rows], marker="o")
        if key == "images_per_second":
            axes.fill_between(workers, [r["min"] for r in rows], [r["max"] for r in rows], alpha=0.2)
        axes.set_xlabel("workers")
        axes.set_ylabel(label)
        axes.set_xticks(workers)
        axes.grid(alpha=0.3)
        if title:
            axes.set_title(title, fontsize=9)
        save_figure_atomic(figure, folder / f"{prefix}{name}")
        written.append(folder / f"{prefix}{name}")
    return written


# ------------------------------------------------------------------ scaling model on paper
CNN_PARAMETERS = models.spec("cnn").parameters
INTERCONNECTS = {  # name: (bytes/s per worker for the all-reduce, per-message latency in s)
    "25 Gb/s Ethernet": (25e9 / 8, 30e-6),
    "100 Gb/s InfiniBand": (100e9 / 8, 3e-6),
    "200 Gb/s InfiniBand": (200e9 / 8, 3e-6),
    "NVLink (in a node, ~150 GB/s)": (150e9, 2e-6),
}


def ring_allreduce_seconds(workers: int, payload_bytes: float, bandwidth: float, latency: float) -> float:
    """Ring all-reduce: 2(N-1) steps, each moving payload/N bytes per worker."""
    if workers == 1:
        return 0.0
    return 2 * (workers - 1) * (latency + payload_bytes / workers / bandwidth)


def projected_efficiency(workers: int, batch_per_worker: int, worker_flops: float, bandwidth: float,
                         latency: float, bytes_per_parameter: int = 4, overlap: float = 0.0) -> float:
    """Weak-scaling efficiency of the CNN: compute / (compute + exposed all-reduce time).

    ``overlap`` is the fraction of the all-reduce hidden behind the backward pass.
    """
    compute = batch_per_worker * models.spec("cnn").mflop_per_image * 1e6 / worker_flops
    communicate = ring_allreduce_seconds(workers, CNN_PARAMETERS * bytes_per_parameter, bandwidth, latency)
    return compute / (compute + (1 - overlap) * communicate)


def scaling_table(batch_per_worker: int, worker_flops: float, bytes_per_parameter: int = 4,
                  workers: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)) -> str:
    """Markdown table of projected efficiencies for each interconnect."""
    lines = ["| interconnect | " + " | ".join(f"{n}" for n in workers) + " |",
             "|---|" + "---|" * len(workers)]
    for name, (bandwidth, latency) in INTERCONNECTS.items():
        cells = [f"{projected_efficiency(n, batch_per_worker, worker_flops, bandwidth, latency, bytes_per_parameter):.2f}"
                 for n in workers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The link as the ring model sees it, measured by the same all-reduce: latency from 4 KiB, bandwidth from 4 MiB
# (a NIC is at full speed there). Not from a payload far above the gradients': between ranks of one host the
# "link" is memory, and its bytes/s halve once the buffers leave the last-level cache (RESULTS.md: 64 MiB
# predicted the 13 MB all-reduce 2x too slow).
LINK_PROBE_BYTES = (4_096, 4_194_304)
SWEEP_BYTES = (262_144, 1_048_576, 33_554_432, 67_108_864)  # also timed, for the record (seconds_by_payload)


def allreduce_seconds(payload_bytes: int = CNN_PARAMETERS * 4, repeats: int = 20,
                      probes: tuple[int, ...] = LINK_PROBE_BYTES) -> dict[str, Any]:
    """Measured time of one all-reduce of ``payload_bytes`` float32 across the ranks of this job, and the
    ring model's prediction for it from the link measured by the same all-reduce at ``probes`` sizes."""
    world = distributed.init()
    seconds = {size: _allreduce_median(size, repeats) for size in sorted({payload_bytes, *probes, *SWEEP_BYTES})}
    median = seconds[payload_bytes]
    bus = 2 * (world.size - 1) / world.size * payload_bytes / median if world.size > 1 else 0.0
    result = {"world_size": world.size, "payload_bytes": payload_bytes, "seconds": median,
              "bus_bandwidth_bytes_per_second": bus,
              "seconds_by_payload": {str(size): t for size, t in seconds.items()}}
    if world.size > 1:
        try:
            link = fit_link(world.size, {size: seconds[size] for size in probes})
        except ValueError as err:  # a noisy run: the timings stand, the check is reported as not made
            return result | {"link_error": str(err)}
        predicted = ring_allreduce_seconds(world.size, payload_bytes, link["bandwidth"], link["latency"])
        result |= {"link": link, "model_seconds": predicted, "measured_over_model": median / predicted}
    return result


def _allreduce_median(payload_bytes: int, repeats: int) -> float:
    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    tensor = tf.ones(payload_bytes // 4, tf.float32)
    times = []
    for i in range(repeats + 3):
        distributed.barrier()
        start = time.perf_counter()
        hvd_tf.allreduce(tensor, op=hvd_tf.Sum, name=f"allreduce_{payload_bytes}_{i}").numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def fit_link(workers: int, seconds_by_payload: dict[int, float]) -> dict[str, float]:
    """The ring model's latency and per-worker bandwidth from all-reduce times at two payloads (the
    smallest and the largest): T(S) = 2(N-1) latency + 2(N-1) S / (N bandwidth), solved for both.
    The "latency" takes in every fixed cost of the all-reduce (Horovod's cycle, too); clamped at 0
    when noise makes the line cross below the origin (then the small payload is not reproduced)."""
    small, large = min(seconds_by_payload), max(seconds_by_payload)
    steps = 2 * (workers - 1)
    per_byte = (seconds_by_payload[large] - seconds_by_payload[small]) / (large - small)
    if per_byte <= 0:
        raise ValueError(f"the all-reduce of {large} bytes was not slower than of {small}: no bandwidth to fit")
    latency = max(seconds_by_payload[small] - per_byte * small, 0.0) / steps
    return {"latency": latency, "bandwidth": steps / (workers * per_byte), "from_payloads": [small, large]}
