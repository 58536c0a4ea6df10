"""precision.py: --precision auto from faked CPU flags and GPU compute capabilities."""



from mnist_hpc import precision


CPU_FLAGS = "flags : fpu avx2 avx512f {}"


def test_precision_auto():
    assert precision.choose_precision("auto", None, CPU_FLAGS.format("avx512_bf16")) == "bf16"
    assert precision.choose_precision("auto", None, CPU_FLAGS.format("amx_bf16")) == "bf16"
    assert precision.choose_precision("auto", None, CPU_FLAGS.format("")) == "fp32"
    assert precision.choose_precision("auto", (8, 0)) == "bf16"
    assert precision.choose_precision("auto", (7, 0)) == "fp16"
    assert precision.choose_precision("fp32", (8, 0)) == "fp32"
