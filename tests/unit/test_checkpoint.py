"""checkpoint.py: atomic save, newest-valid lookup, the one resume rule, restore by variable name."""

import numpy as np
import pytest

from mnist_hpc import checkpoint, rundir


def _save(directory, epoch, keep=3, model="cnn", **kwargs):
    weights = {"dense/kernel:0": np.full((3, 2), epoch, np.float32), "dense/bias:0": np.arange(4, dtype=np.float32)}
    return checkpoint.save(directory, {"model": model, "epoch": epoch, "history": []}, weights,
                           {"iteration:0": np.array(epoch * 10, np.int64)}, keep=keep, **kwargs)


def test_round_trip_and_keep_last_k(tmp_path):
    for epoch in range(1, 6):
        _save(tmp_path, epoch, keep=2)
    assert [p.name for p in checkpoint.candidates(tmp_path)] == ["ckpt-00005.npz", "ckpt-00004.npz"]
    found = checkpoint.latest_valid(tmp_path)
    assert found.epoch == 5 and found.model_weights["dense/kernel:0"][0, 0] == 5
    assert int(found.optimizer_variables["iteration:0"]) == 50
    assert oct(found.path.stat().st_mode & 0o777) == oct(rundir.PRIVATE_FILE_MODE)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_newest_is_skipped_with_a_warning(tmp_path, damage):
    _save(tmp_path, 1)
    newest = _save(tmp_path, 2)
    content = bytearray(newest.read_bytes())
    if damage == "truncate":
        newest.write_bytes(content[: len(content) // 2])
    else:
        content[len(content) // 3] ^= 0xFF
        newest.write_bytes(bytes(content))
    warnings = []
    found = checkpoint.latest_valid(tmp_path, warn=warnings.append)
    assert found.epoch == 1
    assert len(warnings) == 1 and "ckpt-00002.npz" in warnings[0]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    _save(tmp_path, 1)

    def write_then_fail(out, **arrays):  # a full disk half-way through the write
        out.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        _save(tmp_path, 2, write=write_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00001.npz"]  # no temp file left
    assert checkpoint.latest_valid(tmp_path).epoch == 1


def test_resume_refuses_the_other_model(tmp_path):
    _save(tmp_path, 1, model="simple")
    with pytest.raises(checkpoint.CheckpointError, match="model 'simple', not 'cnn'"):
        checkpoint.resolve("auto", tmp_path, "cnn")
    assert checkpoint.resolve("never", tmp_path, "cnn") is None
    assert checkpoint.resolve("auto", tmp_path / "none", "cnn") is None


class Variable:  # the part of tf.Variable that checkpoint.assign uses
    def __init__(self, name, shape):
        self.name, self.shape, self.value = name, shape, None

    def assign(self, value):
        self.value = value


def test_state_is_restored_by_name_whatever_the_order(tmp_path):
    found = checkpoint.load(_save(tmp_path, 3))
    variables = [Variable("dense/bias:0", (4,)), Variable("dense/kernel:0", (3, 2))]  # the other order
    checkpoint.assign(variables, found.model_weights, "model", found.path)
    assert variables[0].value.tolist() == [0, 1, 2, 3] and variables[1].value[0, 0] == 3


@pytest.mark.parametrize("variables,message", [
    ([Variable("dense/kernel:0", (3, 2))], r"missing \[\], unexpected \['dense/bias:0'\]"),
    ([Variable("dense/kernel:0", (3, 2)), Variable("other/bias:0", (4,))], r"missing \['other/bias:0'\]"),
    ([Variable("dense/kernel:0", (2, 3)), Variable("dense/bias:0", (4,))], r"dense/kernel:0 has shape \(3, 2\)"),
])
def test_a_state_that_does_not_match_is_one_line_naming_it(tmp_path, variables, message):
    found = checkpoint.load(_save(tmp_path, 3))
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.assign(variables, found.model_weights, "model", found.path)
    assert all(v.value is None for v in variables)  # nothing assigned before the check


def test_a_checkpoint_written_before_names_were_kept_restores_by_position(tmp_path):
    path = tmp_path / "ckpt-00002.npz"
    meta = np.frombuffer(b'{"model": "cnn", "epoch": 2, "history": []}', np.uint8)
    np.savez(path, meta=meta, model_0000=np.ones((3, 2), np.float32), model_0001=np.zeros(4, np.float32))
    found = checkpoint.resolve("auto", tmp_path, "cnn")
    variables = [Variable("dense/kernel:0", (3, 2)), Variable("dense/bias:0", (4,))]
    checkpoint.assign(variables, found.model_weights, "model", found.path)
    assert variables[0].value.sum() == 6 and variables[1].value.sum() == 0


def test_resume_rule_is_the_same_for_validation_and_training(tmp_path):
    _save(tmp_path, 1)
    newest = _save(tmp_path, 2)
    newest.write_bytes(b"damaged")
    assert checkpoint.resolve("auto", tmp_path, "cnn", arrays=False).path.name == "ckpt-00001.npz"
    assert checkpoint.resolve("auto", tmp_path, "cnn", warn=lambda m: None).path.name == "ckpt-00001.npz"
    with pytest.raises(checkpoint.CheckpointError, match="is not a file"):
        checkpoint.resolve(str(tmp_path / "nope.npz"), tmp_path, "cnn")
