"""One schema for the settings: options, --config files and their checks come from the config dataclasses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mnist_hpc import cli, options, runconfig
from mnist_hpc.config import TrainConfig


def train_config_of(*argv: str) -> TrainConfig:
    return cli.config_from_args(cli.build_parser().parse_args(["train", *argv]))


def test_a_config_file_plus_an_override_is_the_run_the_options_give(tmp_path):
    run = tmp_path / "run.toml"
    run.write_text('model = "cnn"\nlr = 0.002\nseed = 7\naugment = 1\nprecision = "fp32"\n'
                   "fp16_allreduce = true\n[knobs]\ncycle_time_ms = 2.5\n")
    from_file = train_config_of("--config", str(run), "--seed", "9", "--out", "o")
    from_options = train_config_of("--model", "cnn", "--lr", "0.002", "--seed", "9", "--augment", "1", "--precision",
                                   "fp32", "--fp16-allreduce", "--cycle-time-ms", "2.5", "--out", "o")
    assert from_file == from_options and from_file.seed == 9


def test_a_runs_config_toml_repeats_the_run(tmp_path):
    original = train_config_of("--model", "simple", "--lr", "0.3", "--epochs", "4", "--seed", "5", "--no-scale-lr",
                               "--out", "first")
    saved = tmp_path / "config.toml"
    saved.write_text(runconfig.to_toml(original))
    repeated = train_config_of("--config", str(saved), "--out", "second")
    assert runconfig.identity(repeated) == runconfig.identity(original)
    assert repeated.resolved_recipe() == original.resolved_recipe() and repeated.scale_lr is False


@pytest.mark.parametrize("model", ["simple", "cnn"])
def test_every_models_config_toml_passes_trains_own_checks(model, tmp_path, mnist_dir):
    """RUN_DIR/config.toml as train writes it, read back by `train --config` with every check train makes
    (an SGD recipe has no Adam setting to refuse, a model without dropout no dropout rate)."""
    from mnist_hpc import cli

    original = cli.validate_train(["--model", model, "--data-dir", str(mnist_dir), "--out", str(tmp_path / "first")])
    saved = tmp_path / "config.toml"
    saved.write_text(runconfig.to_toml(original))
    repeated = cli.validate_train(["--config", str(saved), "--out", str(tmp_path / "second")])
    assert runconfig.identity(repeated) == runconfig.identity(original)


def test_a_budget_on_the_command_line_replaces_the_files(tmp_path):
    run = tmp_path / "run.toml"
    run.write_text("epochs = 9\n")
    config = train_config_of("--config", str(run), "--steps", "100")
    assert (config.epochs, config.steps) == (None, 100)


@pytest.mark.parametrize("text,message", [
    ("lr = -1\n", "lr: '-1' is not a positive finite number"),
    ('model = "resnet"\n', "model = 'resnet' is not one of simple, cnn"),
    ("learning_rate = 0.1\n", "unknown setting 'learning_rate' (allowed: model, recipe,"),
    ('fp16_allreduce = "yes"\n', "fp16_allreduce = 'yes' is not true or false"),
    ("[knobs]\ncycle_time_ms = 0\n", "knobs.cycle_time_ms: '0' is not a positive finite number"),
    ("lr = [1\n", "not TOML"),
])
def test_a_bad_config_file_is_one_line_naming_the_file_and_the_setting(tmp_path, text, message):
    run = tmp_path / "run.toml"
    run.write_text(text)
    with pytest.raises(options.ConfigFileError) as err:
        train_config_of("--config", str(run))
    assert str(err.value).startswith(f"--config: {run}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_config_file_is_one_line(tmp_path):
    result = cli.main(["train", "--config", str(tmp_path / "nope.toml"), "--dry-run"])
    assert result == 2


def test_every_train_option_has_help_and_every_setting_an_option():
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {flag for action in train._actions for flag in action.option_strings}
    for action in train._actions:
        assert action.help, action.option_strings
    settings = [name for name, _ in options.settings_of(TrainConfig)]
    assert {options.flag_of(name, f) for name, f in options.settings_of(TrainConfig)} <= flags
    assert len(settings) == len(set(settings)) > 20


def test_the_help_shows_each_default_once():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "(default: 42)" in help_text and "(default: auto)" in help_text


def test_a_field_added_to_the_config_becomes_an_option_and_a_file_key(tmp_path):
    """The schema is the one list: a new field is an option and a --config key with no other edit."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Extended(TrainConfig):
        passes: int = options.option(1, "backward passes per step", type=options.positive_int)

    parser = cli.Parser(prog="x")
    options.add_options(parser, Extended)
    (tmp_path / "e.toml").write_text("passes = 4\n")
    built = options.build(Extended, options.load_toml(tmp_path / "e.toml", Extended),
                          options.namespace_settings(parser.parse_args(["--seed", "3"]), Extended))
    assert (built.passes, built.seed) == (4, 3)
    assert replace(built, passes=1) == Extended(seed=3)
