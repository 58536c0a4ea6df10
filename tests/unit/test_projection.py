"""The projected time to 99.25% against GPU count (mnist_hpc/projection.py): its arithmetic, its
choice of global batch, its inputs (the studies' tta.json) and `mnist-hpc bench project`."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from mnist_hpc import bench, cli, models, projection
from mnist_hpc.projection import Machine, Measured

CNN = models.spec("cnn")
IB100 = "100 Gb/s InfiniBand"


def test_one_step_is_the_overhead_plus_the_flop_at_the_stated_rate():
    machine = Machine(gpu_tflops=10, step_overhead_ms=0.5)
    assert machine.step_seconds(128) == pytest.approx(0.5e-3 + 128 * 82e6 / 10e12)


def test_the_all_reduce_stays_on_nvlink_within_a_node_and_crosses_the_network_between_nodes():
    machine = Machine(gpus_per_node=4, horovod_cycle_ms=1.0)
    fp32 = CNN.parameters * 4
    assert projection.allreduce_seconds(1, IB100, machine, 4) == 0
    in_node = 1e-3 + bench.ring_allreduce_seconds(4, fp32, *bench.INTERCONNECTS[projection.NVLINK])  # + a cycle
    for network in projection.NETWORKS:  # 4 GPUs: one node, whatever the network
        assert projection.allreduce_seconds(4, network, machine, 4) == pytest.approx(in_node)
    across = bench.ring_allreduce_seconds(8, fp32, *bench.INTERCONNECTS[IB100])  # 32 GPUs = 8 nodes
    assert projection.allreduce_seconds(32, IB100, machine, 4) == pytest.approx(in_node + across)
    half = (1e-3 + bench.ring_allreduce_seconds(4, fp32 / 2, *bench.INTERCONNECTS[projection.NVLINK])
            + bench.ring_allreduce_seconds(8, fp32 / 2, *bench.INTERCONNECTS[IB100]))
    assert projection.allreduce_seconds(32, IB100, machine, 2) == pytest.approx(half)  # fp16-compressed gradients
    ethernet = projection.allreduce_seconds(32, "25 Gb/s Ethernet", machine, 4)
    assert ethernet > projection.allreduce_seconds(32, "200 Gb/s InfiniBand", machine, 4)


def test_accumulation_is_what_lets_few_gpus_train_a_batch_larger_than_one_step():
    machine = Machine(max_micro_batch=1024)
    assert projection.split(4096, 1, machine, accumulate=True) == (1024, 4)
    assert projection.split(4096, 1, machine, accumulate=False) is None
    assert projection.split(4096, 4, machine, accumulate=False) == (1024, 1)
    assert projection.split(256, 512, machine, accumulate=True) is None  # fewer images than GPUs


def test_time_to_target_is_updates_times_accumulated_steps_plus_one_all_reduce():
    machine = Machine(max_micro_batch=512)
    point = Measured(global_batch=4096, updates=100, seeds=3, recipe="large-batch", study="s")
    got = projection.time_to_target(point, 4, IB100, machine, 4, accumulate=True)
    step = machine.step_seconds(512)
    assert (got["batch_per_gpu"], got["backward_passes"]) == (512, 2)
    assert got["seconds"] == pytest.approx(100 * (2 * step + projection.allreduce_seconds(4, IB100, machine, 4)))


# Updates to 99.25% as measured (medians of the committed studies, rounded): a larger batch needs
# fewer updates but more images.
MEASURED = [Measured(256, 807, 3, "default", "tta-study"), Measured(1024, 420, 3, "default", "tta-study"),
            Measured(4096, 112, 3, "large-batch", "tta-large-batch-4096"),
            Measured(16384, 172, 3, "large-batch", "tta-large-batch-16384")]


def test_one_gpu_picks_the_batch_with_fewest_images_and_many_gpus_the_one_with_fewest_updates():
    machine = Machine()
    one = projection.best(MEASURED, 1, IB100, machine, 4, accumulate=True)
    assert one["global_batch"] == 256  # compute-bound: the fewest images (807 x 256)
    many = projection.best(MEASURED, 64, IB100, machine, 4, accumulate=True)
    assert many["global_batch"] == 4096  # communication-bound: the fewest updates
    # without accumulation 1 GPU cannot hold 4,096 images in a step; the choice is among what fits
    assert projection.best(MEASURED, 1, IB100, machine, 4, accumulate=False)["global_batch"] == 256
    small = Machine(max_micro_batch=128)  # no measured batch fits one step of one GPU: only accumulation runs
    assert projection.best(MEASURED, 1, IB100, small, 4, accumulate=False) is None
    assert projection.best(MEASURED, 1, IB100, small, 4, accumulate=True)["backward_passes"] == 2


def test_the_answer_names_the_soonest_gpu_count_its_speed_up_and_the_fewest_gpus_nearly_as_soon():
    result = projection.project(MEASURED, Machine())
    rows = {(r["network"], r["scenario"]): r for r in projection.answers(result)}
    assert set(rows) == {(n, s) for n in projection.NETWORKS for s in projection.ANSWERED}
    answer = rows[IB100, "fp16-compressed, accumulation"]
    curve = result["curves"][IB100]["fp16-compressed, accumulation"]
    assert answer["soonest"]["seconds"] == min(e["seconds"] for e in curve)
    one_node = curve[projection.GPU_COUNTS.index(4)]["seconds"]
    assert answer["speedup_vs_one_node"] == pytest.approx(one_node / answer["soonest"]["seconds"])
    assert answer["speedup_vs_one_gpu"] == pytest.approx(curve[0]["seconds"] / answer["soonest"]["seconds"])
    # the scenario's gradient size is what its all-reduce carries
    fp32 = projection.time_to_target(MEASURED[2], 64, IB100, Machine(), 4, True)
    assert result["curves"][IB100]["fp32, accumulation"][projection.GPU_COUNTS.index(64)] == fp32
    nearly = answer["nearly_as_soon"]
    assert nearly["seconds"] <= projection.WITHIN * answer["soonest"]["seconds"]
    assert all(e["seconds"] > projection.WITHIN * answer["soonest"]["seconds"] for e in curve if e["gpus"] < nearly["gpus"])
    # a faster network, or fp16-compressed gradients, never make the soonest time later
    soonest = {key: row["soonest"]["seconds"] for key, row in rows.items()}
    for scenario in projection.ANSWERED:
        assert soonest["25 Gb/s Ethernet", scenario] >= soonest[IB100, scenario] >= soonest["200 Gb/s InfiniBand", scenario]
    assert all(soonest[n, "fp32, accumulation"] >= soonest[n, "fp16-compressed, accumulation"] for n in projection.NETWORKS)


def study(folder, recipe, rows):
    folder.mkdir(parents=True)
    (folder / "tta.json").write_text(json.dumps({"study": {"recipe": recipe, "seeds": [42, 43, 44]}, "by_global_batch": [
        {"global_batch": gb, "trials": trials, "reached": reached, "median_updates": updates}
        for gb, trials, reached, updates in rows], "trials": [
        {"global_batch": gb, "target": {"updates": updates, "epochs": updates * gb / 55_000} if seed < reached else None}
        for gb, trials, reached, updates in rows for seed in range(trials)]}))
    return folder


def test_inputs_keep_only_batches_every_seed_reached_and_the_fewest_updates_among_studies(tmp_path):
    default = study(tmp_path / "default", "default", [(256, 3, 3, 807), (4096, 3, 0, None), (16384, 1, 0, None)])
    large = study(tmp_path / "large", "large-batch", [(256, 3, 3, 900), (4096, 3, 3, 112), (16384, 3, 2, 150),
                                                      (1024, 2, 2, 400)])  # 1,024: a seed still running
    for order in ([default, large], [large, default]):  # the fewer updates win, whichever study comes first
        points = projection.measured_points(order)
        assert [(p.global_batch, p.updates, p.recipe) for p in points] == [(256, 807, "default"),
                                                                            (4096, 112, "large-batch")]
    assert points[1].seed_updates == (112, 112, 112)  # each seed's, for the plot
    with pytest.raises(cli.UsageError, match="no tta.json"):
        projection.measured_points([tmp_path])
    with pytest.raises(cli.UsageError, match="every seed reached"):
        projection.measured_points([study(tmp_path / "none", "default", [(16384, 3, 2, 150)])])


def test_bench_project_writes_the_table_the_json_and_the_plot(tmp_path):
    large = study(tmp_path / "large", "large-batch", [(p.global_batch, 3, 3, p.updates) for p in MEASURED])
    out = tmp_path / "projection"
    result = subprocess.run([sys.executable, "-m", "mnist_hpc", "bench", "project", "--studies", str(large),
                             "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    written = json.loads((out / "projection.json").read_text())
    assert written["gpu_counts"] == list(projection.GPU_COUNTS)
    assert {row["network"] for row in written["answers"]} == set(projection.NETWORKS)
    assert (out / "projection.png").read_bytes()[:4] == (out / "measured.png").read_bytes()[:4] == b"\x89PNG"
    assert "Soonest GPU count per network" in result.stdout
    assert result.stdout == (out / "projection.md").read_text()


def test_bench_project_refuses_a_gpu_without_flops_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mnist_hpc", "bench", "project", "--studies", str(tmp_path),
                             "--out", str(tmp_path / "p"), "--gpu-tflops", "0"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "'0'" in result.stderr
    assert not (tmp_path / "p").exists()


RESULTS = REPO / "benchmarks" / "results"
STUDIES = [RESULTS / name for name in ("tta-study", "tta-large-batch-4096", "tta-large-batch-16384")]  # run.sh projection


def test_the_committed_projection_follows_from_the_committed_studies_and_scaling_md_quotes_it():
    """benchmarks/results/projection/ is what `bash benchmarks/run.sh projection` makes of the committed
    trials, and the answer tables of SCALING.md and RESULTS.md are its table, row for row."""
    committed = (RESULTS / "projection" / "projection.md").read_text()
    assert projection.markdown(projection.project(projection.measured_points(STUDIES), Machine())) == committed
    for doc in ("SCALING.md", "RESULTS.md"):
        text = (REPO / "benchmarks" / doc).read_text()
        answer_rows = [line for line in text.splitlines() if line.startswith("| ") and " sooner |" in line]
        assert len(answer_rows) == 2 * len(projection.NETWORKS), doc
        assert all(row in committed.splitlines() for row in answer_rows), doc
