import numpy as np
import pytest
import tensorflow as tf

from mnist_hpc import models


def test_simple_is_zero_initialised_softmax_regression():
    model = models.build("simple")
    assert model.count_params() == 7_850
    assert model.output_shape == (None, 10)
    assert all(not np.any(w) for w in model.get_weights())
    assert model(np.zeros((3, 784), np.float32)).shape == (3, 10)


def test_cnn_is_the_deep_mnist_network():
    model = models.build("cnn", seed=1)
    assert model.count_params() == 3_274_634
    assert model.output_shape == (None, 10)
    shapes = {layer.name: layer.output_shape for layer in model.layers}
    assert shapes["conv1"] == (None, 28, 28, 32) and shapes["pool1"] == (None, 14, 14, 32)
    assert shapes["conv2"] == (None, 14, 14, 64) and shapes["pool2"] == (None, 7, 7, 64)
    assert shapes["fc1"] == (None, 1024)
    assert model.get_layer("dropout").rate == 0.5
    for name in ("conv1", "conv2", "fc1", "logits"):
        kernel, bias = model.get_layer(name).get_weights()
        assert np.all(bias == pytest.approx(0.1))
        assert np.abs(kernel).max() <= 0.2 + 1e-6  # truncated at two standard deviations
        assert kernel.std() == pytest.approx(0.088, abs=0.01)  # truncated-normal(0.1) has std ~0.088
    logits = model(np.zeros((2, 28, 28, 1), np.float32), training=False)
    assert logits.shape == (2, 10) and logits.dtype == tf.float32  # logits, no softmax


def test_cnn_mixed_precision_keeps_float32_logits():
    model = models.build("cnn", dtype="mixed_bfloat16")
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("logits").compute_dtype == "float32"
    assert all(w.dtype == tf.float32 for w in model.weights)
    assert model(np.zeros((1, 28, 28, 1), np.float32)).dtype == tf.float32


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*simple, cnn"):
        models.build("resnet")


def test_cnn_he_init_scales_to_fan_in():
    model = models.build("cnn", seed=1, init="he")
    assert model.count_params() == 3_274_634
    for name, fan_in in (("conv1", 25), ("conv2", 25 * 32), ("fc1", 7 * 7 * 64), ("logits", 1024)):
        kernel, bias = model.get_layer(name).get_weights()
        assert not np.any(bias)
        assert kernel.std() == pytest.approx(np.sqrt(2 / fan_in) * 0.88, rel=0.15)  # truncated at 2 std
    with pytest.raises(ValueError, match="unknown init 'xavier'.*tutorial, he"):
        models.build("cnn", init="xavier")
