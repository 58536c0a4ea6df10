"""models.py: the two networks and the registry (a tiny third model needs one entry)."""

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


# ------------------------------------------------------------------ the registry: one entry per model
def tiny(dtype="float32", seed=None, init="tutorial"):
    """A third model as a newcomer writes it: one builder (tests/integration/test_models.py trains it)."""
    inputs = tf.keras.Input(models.INPUT_SHAPES["flat"], name="pixels")
    hidden = tf.keras.layers.Dense(16, activation="relu", name="hidden", dtype=dtype)(inputs)
    logits = tf.keras.layers.Dense(10, name="logits", dtype="float32")(hidden)
    return tf.keras.Model(inputs, logits, name="tiny")


TINY = models.ModelSpec("tiny", tiny, layout="flat", precisions=("fp32", "bf16"), cpu_cycle_time_ms=0.5,
                        mflop_per_image=0.08, smoke_budget=("--epochs", "1"), parameters=12_730,
                        recipes={"default": models.Recipe("adam", 3e-3, 128, epochs=2, schedule="cosine")})


@pytest.fixture
def registered_tiny():
    models.register(TINY)
    yield TINY
    del models.REGISTRY["tiny"]


def test_a_registry_entry_is_all_the_rest_of_the_toolkit_needs(registered_tiny):
    from mnist_hpc import cli, config

    parser = cli.build_parser()
    def config_of(*argv):
        return cli.config_from_args(parser.parse_args(["train", *argv]))

    cli.check_model_choices(config_of("--model", "tiny", "--precision", "bf16"))  # its own recipes and precisions
    # its own recipe, with Adam's beta_1 written out as Keras's default
    assert config.TrainConfig(model="tiny").resolved_recipe() == __import__("dataclasses").replace(
        TINY.recipes["default"], adam_beta1=models.ADAM_BETA1)
    with pytest.raises(cli.UsageError, match="--recipe: seed is not a recipe of model tiny .allowed: default."):
        cli.check_model_choices(config_of("--model", "tiny", "--recipe", "seed"))
    with pytest.raises(cli.UsageError, match="fp16 applies to cnn; tiny trains in fp32/bf16"):
        cli.check_model_choices(config_of("--model", "tiny", "--precision", "fp16"))
    assert cli.bench_config_from_args(parser.parse_args(["bench", "throughput", "--model", "tiny"])).run.model == "tiny"
    model = models.build("tiny")
    assert model.count_params() == TINY.parameters and models.layout_of(model) == "flat"


@pytest.mark.parametrize("added", [False, True], ids=["built-in", "with-an-added-model"])
def test_every_entry_is_complete_and_its_facts_hold(added, request):
    """The two built-in networks come first with their facts; a model added as the README shows
    (its "Adding a model") is held to the same rules and does not break this test."""
    if added:
        request.getfixturevalue("registered_tiny")
    assert models.names()[:2] == ("simple", "cnn") and len(models.names()) == 2 + added
    assert (models.spec("simple").parameters, models.spec("cnn").parameters) == (7_850, 3_274_634)
    for spec in models.REGISTRY.values():
        model = spec.build("float32", 0, "tutorial")
        assert model.name == spec.name and model.input_shape[1:] == spec.input_shape
        assert model.count_params() == spec.parameters
        assert "default" in spec.recipes and spec.mflop_per_image > 0
        assert set(spec.precisions) <= {"fp32", "bf16", "fp16"} and "fp32" in spec.precisions
    for name in ("simple", "cnn"):  # the built-ins also carry the TensorFlow tutorial as published
        assert {"default", "seed"} <= set(models.spec(name).recipes)


def test_an_entry_without_a_default_recipe_or_with_an_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="a 'default' recipe is required"):
        models.register(models.ModelSpec("x", tiny, layout="flat", recipes={}))
    with pytest.raises(ValueError, match="layout 'grid' is not one of flat, image"):
        models.register(models.ModelSpec("x", tiny, layout="grid", recipes={"default": TINY.recipes["default"]}))
    assert "x" not in models.REGISTRY


def test_the_recipes_are_the_readmes_table():
    """The README's recipe table, cell by cell: optimizer, rate, batch, budget, schedule, init, shifts."""
    R = models.Recipe
    assert models.spec("simple").recipes == {"seed": R("sgd", 0.5, 100, steps=1_000),
                                             "default": R("sgd", 1.0, 256, epochs=30, schedule="cosine")}
    cnn = models.spec("cnn").recipes
    assert cnn["seed"] == R("adam", 1e-4, 50, steps=20_000, init="tutorial")
    assert cnn["default"] == R("adam", 1e-3, 128, epochs=15, schedule="cosine", warmup_epochs=0.25, augment=2,
                               init="he")
    assert cnn["large-batch"] == R("adam", 1e-3, 128, epochs=12, schedule="cosine", warmup_epochs=3.0, augment=2,
                                   init="he", lr_rule="sqrt")
    assert "large-batch" not in models.spec("simple").recipes


def test_dropout_and_adam_beta1_reach_the_compiled_model():
    """--dropout sets the CNN's dropout layer (0.5, the tutorial's, when not given), --adam-beta1 Adam's
    beta_1 (Keras's 0.9 when not given); both are recipe settings, so a resume must repeat them."""
    from mnist_hpc import compiled, distributed, pipeline, runconfig
    from mnist_hpc.config import TrainConfig

    world = distributed.World(0, 1, 0, 1)
    plan = pipeline.shard_plan(55_000, 1, 128)
    for given, rate, beta in (({}, 0.5, 0.9), ({"dropout": 0.2, "adam_beta1": 0.8}, 0.2, 0.8)):
        config = TrainConfig(model="cnn", **given)
        model = compiled.compile_model(config, config.resolved_recipe(), "fp32", world, plan, total_steps=10,
                                       horovod=False)
        assert model.get_layer("dropout").rate == rate and float(model.optimizer.beta_1) == pytest.approx(beta)
    assert {"dropout", "adam_beta1"} <= set(runconfig.RECIPE_SETTINGS)
    with pytest.raises(runconfig.RunConfigError, match="--dropout 0.5 there, 0.2 now"):
        runconfig.check_resumable({"model": "cnn", "epoch": 1, "config": __import__("dataclasses").asdict(
            TrainConfig(model="cnn", out="r"))}, TrainConfig(model="cnn", dropout=0.2, out="r"), "r")
