"""Projected time to a test accuracy against GPU count: measured updates x a stated machine.

    time to target (N GPUs) = updates(G) x [ K x step(b) + allreduce(N) ]      with N x b x K = G

- ``updates(G)``: measured on this machine by the time-to-accuracy studies (``mnist-hpc bench tta``):
  the median over seeds of the optimizer updates until the target at global batch G, with the
  best recipe measured at that batch. Horovod averages the gradients, so any N x b x K = G needs
  these same updates: the updates do not depend on the hardware, only on G.
- ``step(b) = overhead + b x FLOP per image / GPU rate``: one forward + backward pass of b images on
  one GPU at a stated effective rate (no GPU was reachable here: an assumption, not a measurement).
- ``allreduce(N)``: one Horovod cycle (an all-reduce starts at the next one), then the CNN's gradients
  (float32, or fp16-compressed) in a ring (:func:`bench.ring_allreduce_seconds`). Nodes of ``gpus_per_node`` GPUs on NVLink; across nodes a
  node's GPUs share its link (hierarchical: in-node reduce-scatter, one cross-node ring of the whole
  payload per node, in-node all-gather).
- For each N the global batch with the shortest time is chosen among the measured ones. Without
  accumulation K = 1, so the per-GPU batch G/N must fit one step (<= ``max_micro_batch``); with it,
  K grows until it does.
- The training loop only. Not modelled: overlap of the all-reduce with the backward pass (Horovod
  hides part of it: pessimistic), and the evaluation and start-up (fixed costs that shrink every
  speed-up: optimistic).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import bench, cli, models, tta
from .options import non_negative_float, positive_float
from .rundir import save_figure_atomic, write_json_atomic, write_text_atomic

GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
GPUS_PER_NODE = (1, 2, 4, 8, 16)  # whole nodes at every GPU count above one node
NVLINK = "NVLink (in a node, ~150 GB/s)"
NETWORKS = ("25 Gb/s Ethernet", "100 Gb/s InfiniBand", "200 Gb/s InfiniBand")  # between nodes (bench.INTERCONNECTS)


@dataclass(frozen=True)
class Machine:
    """The stated GPU cluster the projection is for (each default is an assumption, see SCALING.md)."""
    gpu_tflops: float = 10.0  # effective TFLOP/s of one GPU on this small CNN (V100/A100 class)
    step_overhead_ms: float = 0.5  # per forward+backward step regardless of batch (launches, input, optimizer)
    gpus_per_node: int = 4  # joined by NVLink; nodes by the network
    max_micro_batch: int = 1024  # the largest per-GPU batch of one step (memory); beyond it, accumulation
    horovod_cycle_ms: float = 1.0  # Horovod's default HOROVOD_CYCLE_TIME: an all-reduce waits for the next cycle

    def step_seconds(self, batch: int) -> float:
        """One forward + backward pass of ``batch`` images of the CNN on one GPU."""
        flop = batch * models.spec("cnn").mflop_per_image * 1e6
        return self.step_overhead_ms * 1e-3 + flop / (self.gpu_tflops * 1e12)


@dataclass(frozen=True)
class Measured:
    """Updates to the target at one global batch, from a time-to-accuracy study."""
    global_batch: int
    updates: float  # median over the seeds
    seeds: int
    recipe: str
    study: str
    seed_updates: tuple[int, ...] = ()  # each seed's updates and epochs to the target
    seed_epochs: tuple[float, ...] = ()


def allreduce_seconds(gpus: int, network: str, machine: Machine, bytes_per_parameter: int) -> float:
    """Hierarchical ring all-reduce of the CNN's gradients over ``gpus`` GPUs, after a wait of one whole
    Horovod cycle (0 for one GPU): `bench allreduce` found its smallest all-reduce took one cycle
    (RESULTS.md); in training a tensor waits 0 to 1 cycle, so this is the worst case."""
    if gpus == 1:
        return 0.0
    payload = models.spec("cnn").parameters * bytes_per_parameter
    in_node = min(gpus, machine.gpus_per_node)
    nodes = math.ceil(gpus / machine.gpus_per_node)
    rings = (bench.ring_allreduce_seconds(in_node, payload, *bench.INTERCONNECTS[NVLINK])
             + bench.ring_allreduce_seconds(nodes, payload, *bench.INTERCONNECTS[network]))
    return machine.horovod_cycle_ms * 1e-3 + rings


def split(global_batch: int, gpus: int, machine: Machine, accumulate: bool) -> tuple[int, int] | None:
    """(per-GPU batch, K) for ``global_batch`` on ``gpus`` GPUs, or None where it cannot run."""
    if global_batch % gpus:
        return None
    batch, passes = tta.split_batch(global_batch, gpus, machine.max_micro_batch)  # as the study split its ranks'
    return None if passes > 1 and not accumulate else (batch, passes)


def time_to_target(point: Measured, gpus: int, network: str, machine: Machine, bytes_per_parameter: int,
                   accumulate: bool) -> dict[str, Any] | None:
    """The projected seconds to the target at one measured global batch on ``gpus`` GPUs, or None."""
    shape = split(point.global_batch, gpus, machine, accumulate)
    if shape is None:
        return None
    batch, passes = shape
    compute = passes * machine.step_seconds(batch)
    communicate = allreduce_seconds(gpus, network, machine, bytes_per_parameter)
    return {"gpus": gpus, "nodes": math.ceil(gpus / machine.gpus_per_node), "global_batch": point.global_batch,
            "batch_per_gpu": batch, "backward_passes": passes, "updates": point.updates,
            "seconds_per_update": compute + communicate, "communication_share": communicate / (compute + communicate),
            "seconds": point.updates * (compute + communicate)}


def best(points: list[Measured], gpus: int, network: str, machine: Machine, bytes_per_parameter: int,
         accumulate: bool) -> dict[str, Any] | None:
    """The measured global batch that reaches the target soonest on ``gpus`` GPUs."""
    options = [t for p in points if (t := time_to_target(p, gpus, network, machine, bytes_per_parameter, accumulate))]
    return min(options, key=lambda t: t["seconds"]) if options else None


SCENARIOS = {  # name: (bytes per gradient value in the all-reduce, accumulation allowed)
    "fp32, no accumulation": (4, False),
    "fp32, accumulation": (4, True),
    "fp16-compressed, no accumulation": (2, False),
    "fp16-compressed, accumulation": (2, True),
}


def project(points: list[Measured], machine: Machine, gpu_counts=GPU_COUNTS) -> dict[str, Any]:
    """Every network x scenario x GPU count: the best projected time and the batch it uses."""
    curves = {network: {scenario: [best(points, n, network, machine, size, accumulate) for n in gpu_counts]
                        for scenario, (size, accumulate) in SCENARIOS.items()} for network in NETWORKS}
    return {"machine": asdict(machine), "measured": [asdict(p) for p in points], "gpu_counts": list(gpu_counts),
            "curves": curves}


# ------------------------------------------------------------------ inputs: the studies' tta.json
def measured_points(studies: list[Path]) -> list[Measured]:
    """Per global batch, the study whose every seed reached the target in the fewest median updates."""
    points: dict[int, Measured] = {}
    for folder in studies:
        path = folder / "tta.json"
        if not path.is_file():
            raise cli.UsageError(f"--studies: {folder} has no tta.json (run `mnist-hpc bench tta --report-only --out "
                             f"{folder}` first)")
        report = json.loads(path.read_text())
        seeds = len(report["study"]["seeds"])
        for entry in report["by_global_batch"]:
            if entry["reached"] < seeds:
                continue  # a batch where a seed missed the target (or has not finished) has no time to target
            hits = [t["target"] for t in report.get("trials", [])
                    if t["global_batch"] == entry["global_batch"] and t.get("target")]
            point = Measured(entry["global_batch"], entry["median_updates"], entry["trials"],
                             report["study"]["recipe"], folder.name, tuple(h["updates"] for h in hits),
                             tuple(h["epochs"] for h in hits))
            held = points.get(point.global_batch)
            if held is None or point.updates < held.updates:
                points[point.global_batch] = point
    if not points:
        raise cli.UsageError(f"--studies: no global batch where every seed reached the target in {studies}")
    return sorted(points.values(), key=lambda p: p.global_batch)


# ------------------------------------------------------------------ outputs
def _cell(entry: dict[str, Any] | None) -> str:
    return "-" if entry is None else f"{entry['seconds']:.2f} s ({entry['global_batch']})"


def _gpus(entry: dict[str, Any]) -> str:
    nodes = entry["nodes"]
    return f"{entry['gpus']} GPU{'s' * (entry['gpus'] > 1)} ({nodes} node{'s' * (nodes > 1)})"


def markdown(projection: dict[str, Any]) -> str:
    counts = projection["gpu_counts"]
    machine = Machine(**projection["machine"])
    header = ["| | " + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in counts) + " |", "|---" * (len(counts) + 1) + "|"]
    lines = ["Measured updates to the target (median over seeds; the best recipe measured at each global batch):", "",
             "| global batch | updates | seeds | recipe | study |", "|---|---|---|---|---|"]
    lines += [f"| {p['global_batch']} | {p['updates']:g} | {p['seeds']} | {p['recipe']} | {p['study']} |"
              for p in projection["measured"]]
    for scenario in SCENARIOS:
        lines += ["", f"Projected seconds to the target, {scenario} (the global batch chosen in brackets); nodes of "
                  f"{machine.gpus_per_node} GPUs on NVLink:", ""] + header
        for network in NETWORKS:
            lines.append(f"| {network} | " + " | ".join(_cell(e) for e in projection["curves"][network][scenario]) + " |")
    lines += ["", f"Soonest GPU count per network (nodes of {machine.gpus_per_node} GPUs; accumulation allowed):", "",
              "| network | gradients | soonest at | time | vs 1 GPU | vs 1 node | within 10% of it from |",
              "|---|---|---|---|---|---|---|"]
    for row in answers(projection):
        soonest, nearly = row["soonest"], row["nearly_as_soon"]
        lines.append(f"| {row['network']} | {row['scenario'].split(',')[0]} | {_gpus(soonest)}, global batch "
                     f"{soonest['global_batch']} | {soonest['seconds']:.2f} s | {row['speedup_vs_one_gpu']:.1f}x sooner | "
                     f"{row['speedup_vs_one_node']:.1f}x sooner | {_gpus(nearly)}: {nearly['seconds']:.2f} s |")
    return "\n".join(lines) + "\n"


ANSWERED = ("fp32, accumulation", "fp16-compressed, accumulation")  # the scenarios the answer table covers
WITHIN = 1.10  # "nearly as soon": at most 10% later than the soonest


def answers(projection: dict[str, Any]) -> list[dict[str, Any]]:
    """Per network and gradient size: the GPU count that reaches the target soonest, its speed-up over
    1 GPU and over 1 node, and the fewest GPUs within 10% of that time."""
    counts = projection["gpu_counts"]
    per_node = projection["machine"]["gpus_per_node"]
    rows = []
    for network in NETWORKS:
        for scenario in ANSWERED:
            curve = [e for e in projection["curves"][network][scenario] if e]
            soonest = min(curve, key=lambda e: e["seconds"])
            nearly = min((e for e in curve if e["seconds"] <= WITHIN * soonest["seconds"]), key=lambda e: e["gpus"])
            one_gpu = next(e for e in curve if e["gpus"] == 1)
            one_node = next(e for e in curve if e["gpus"] == min(per_node, counts[-1]))
            rows.append({"network": network, "scenario": scenario, "soonest": soonest, "nearly_as_soon": nearly,
                         "speedup_vs_one_gpu": one_gpu["seconds"] / soonest["seconds"],
                         "speedup_vs_one_node": one_node["seconds"] / soonest["seconds"]})
    return rows


def plot(projection: dict[str, Any], path: Path) -> Path:
    """Time to the target against GPU count, per network (fp32 solid, fp16-compressed dashed), with the
    ideal line (1 GPU's time / N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = projection["gpu_counts"]
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    for color, network in zip(("C3", "C0", "C2"), NETWORKS):
        for scenario, style in (("fp32, accumulation", "-"), ("fp16-compressed, accumulation", "--")):
            points = [(n, e["seconds"]) for n, e in zip(counts, projection["curves"][network][scenario]) if e]
            axes.plot(*zip(*points), style, color=color, marker="o", markersize=3,
                      label=f"{network}, {scenario.split(',')[0]}")
    one = projection["curves"][NETWORKS[0]]["fp32, accumulation"][0]["seconds"]
    axes.plot(counts, [one / n for n in counts], ":", color="gray", label="ideal (1 GPU / N)")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(counts, [str(n) for n in counts])
    axes.set_xlabel(f"GPUs ({projection['machine']['gpus_per_node']} per node, NVLink inside)")
    axes.set_ylabel("projected seconds to target")
    axes.set_title("CNN to 99.25%: measured updates x modelled step and all-reduce", fontsize=9)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7)
    return save_figure_atomic(figure, path)


def plot_measured(projection: dict[str, Any], path: Path) -> Path:
    """The measured input: updates and epochs to the target against the global batch, a point per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (updates, epochs) = plt.subplots(1, 2, figsize=(8, 3.4))
    for axes, key, label in ((updates, "seed_updates", "optimizer updates"), (epochs, "seed_epochs", "epochs")):
        for point in projection["measured"]:
            axes.scatter([point["global_batch"]] * len(point[key]), point[key], color="C0")
        medians = [(p["global_batch"], statistics.median(p[key])) for p in projection["measured"] if p[key]]
        if medians:
            axes.plot(*zip(*medians), color="C0", alpha=0.6)
        axes.set_xscale("log", base=2)
        axes.set_xticks([p["global_batch"] for p in projection["measured"]],
                        [f"{p['global_batch']}\n{p['recipe']}" for p in projection["measured"]], fontsize=7)
        axes.set_xlabel("global batch (recipe)")
        axes.set_ylabel(f"{label} to target")
        axes.grid(alpha=0.3)
    figure.suptitle("Measured: one point per seed, the line through the medians", fontsize=9)
    return save_figure_atomic(figure, path)


def write(projection: dict[str, Any], out: Path) -> Path:
    """OUT/projection.json, projection.md, projection.png and measured.png; returns the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "projection.json", projection | {"answers": answers(projection)})
    plot(projection, out / "projection.png")
    plot_measured(projection, out / "measured.png")
    table = out / "projection.md"
    write_text_atomic(table, markdown(projection))
    return table


# ------------------------------------------------------------------ command line (mnist-hpc bench project)
def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = Machine()
    p.add_argument("--studies", type=Path, nargs="+", required=True, metavar="DIR",
                   help="time-to-accuracy study folders (each with its tta.json) giving the updates to the target")
    p.add_argument("--out", type=Path, required=True, help="folder for projection.json, .md and .png")
    p.add_argument("--gpu-tflops", type=positive_float, default=defaults.gpu_tflops,
                   help="effective TFLOP/s of one GPU on the CNN (default: %(default)s)")
    p.add_argument("--step-overhead-ms", type=non_negative_float, default=defaults.step_overhead_ms,
                   help="fixed milliseconds of each forward+backward step (default: %(default)s)")
    p.add_argument("--gpus-per-node", type=int, choices=GPUS_PER_NODE, default=defaults.gpus_per_node,
                   help="GPUs of a node, joined by NVLink (default: %(default)s)")
    p.add_argument("--max-micro-batch", type=cli.batch_size, default=defaults.max_micro_batch,
                   help="largest per-GPU batch of one step; beyond it, accumulation (default: %(default)s)")
    p.add_argument("--horovod-cycle-ms", type=non_negative_float, default=defaults.horovod_cycle_ms,
                   help="Horovod's cycle time, waited once per all-reduce (default: %(default)s)")


def execute(args: argparse.Namespace) -> int:
    machine = Machine(args.gpu_tflops, args.step_overhead_ms, args.gpus_per_node, args.max_micro_batch,
                      args.horovod_cycle_ms)
    projection = project(measured_points(args.studies), machine)
    print(write(projection, args.out).read_text(), end="")
    return 0
