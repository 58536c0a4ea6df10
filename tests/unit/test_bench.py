"""bench.py without ranks: the scaling model on paper."""


import pytest


def test_scaling_model_behaves():
    from mnist_hpc import bench

    bandwidth, latency = bench.INTERCONNECTS["100 Gb/s InfiniBand"]
    assert bench.projected_efficiency(1, 128, 10e12, bandwidth, latency) == 1.0
    effs = [bench.projected_efficiency(n, 128, 10e12, bandwidth, latency) for n in (2, 4, 8, 64)]
    assert effs == sorted(effs, reverse=True) and 0 < effs[-1] < effs[0] < 1
    # a bigger batch per worker, fp16 compression or a faster network all help
    assert bench.projected_efficiency(8, 512, 10e12, bandwidth, latency) > effs[2]
    assert bench.projected_efficiency(8, 128, 10e12, bandwidth, latency, bytes_per_parameter=2) > effs[2]
    assert bench.projected_efficiency(8, 128, 10e12, *bench.INTERCONNECTS["200 Gb/s InfiniBand"]) > effs[2]
    # ring all-reduce moves 2(N-1)/N of the payload: 13.1 MB at 12.5 GB/s, N -> large: ~2.1 ms
    assert bench.ring_allreduce_seconds(64, 13_098_536, 12.5e9, 0) == pytest.approx(2 * 63 / 64 * 13_098_536 / 12.5e9)
    assert "| 25 Gb/s Ethernet |" in bench.scaling_table(128, 10e12)


def test_throughput_measures_5_windows_after_a_warm_up_by_default():
    from mnist_hpc import cli

    config = cli.bench_config_from_args(cli.build_parser().parse_args(["bench", "throughput"]))
    assert config.windows == 5 and config.warmup_steps > 0 and config.window_steps > 0


def test_bench_and_train_share_one_set_of_defaults():
    """bench throughput times the training `train` would run with the same options: the same defaults."""
    from mnist_hpc import cli

    parser = cli.build_parser()
    bench_run = cli.bench_config_from_args(parser.parse_args(["bench", "throughput"])).run
    train = cli.config_from_args(parser.parse_args(["train"]))
    assert bench_run == train
    typed = ["--model", "simple", "--precision", "fp32", "--batch-size", "64", "--backward-passes-per-step", "2"]
    assert cli.bench_config_from_args(parser.parse_args(["bench", "throughput", *typed])).run == \
        cli.config_from_args(parser.parse_args(["train", *typed]))



def test_bench_throughput_reads_a_runs_config_toml_as_train_does(tmp_path):
    """`bench throughput --config RUN_DIR/config.toml` times the run `train --config` would make."""
    from mnist_hpc import cli

    path = tmp_path / "config.toml"
    path.write_text('model = "cnn"\nbatch_size = 96\nprecision = "fp32"\nseed = 7\nbackward_passes_per_step = 2\n'
                    'augment = 1\n')
    parser = cli.build_parser()
    bench_run = cli.bench_config_from_args(parser.parse_args(["bench", "throughput", "--config", str(path)])).run
    assert bench_run == cli.config_from_args(parser.parse_args(["train", "--config", str(path)]))
    assert (bench_run.batch_size, bench_run.seed, bench_run.backward_passes_per_step) == (96, 7, 2)


def test_throughput_with_accumulation_counts_k_batches_per_timed_update():
    from mnist_hpc import bench
    from mnist_hpc.config import TrainConfig

    config = bench.BenchConfig(TrainConfig(batch_size=64, backward_passes_per_step=4), warmup_steps=2, windows=2,
                               window_steps=5)
    stamps = [float(second) for second in range(config.steps + 1)]  # one graph call (one update) per second
    assert bench._window_rates(stamps, config) == [4 * 64, 4 * 64]
    train = config.train_config(world_size=2)  # a budget of config.steps updates per rank
    assert (train.backward_passes_per_step, train.steps) == (4, config.steps * 2 * 4)


def test_the_link_fitted_from_two_payloads_gives_back_the_ring_models_own_times():
    """bench allreduce's check of the model: the latency and bandwidth solved from two all-reduce times
    predict, through ring_allreduce_seconds, every payload of a link that follows the model."""
    from mnist_hpc import bench

    workers, bandwidth, latency = 4, 3e9, 20e-6
    times = {size: bench.ring_allreduce_seconds(workers, size, bandwidth, latency) for size in (4_096, 67_108_864)}
    link = bench.fit_link(workers, times)
    assert link["latency"] == pytest.approx(latency) and link["bandwidth"] == pytest.approx(bandwidth)
    with pytest.raises(ValueError, match="not slower"):
        bench.fit_link(2, {4_096: 1e-3, 67_108_864: 1e-3})
