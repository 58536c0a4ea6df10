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
