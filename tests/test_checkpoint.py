import numpy as np
import pytest

from mnist_hpc import checkpoint, rundir


def _save(directory, epoch, keep=3, model="cnn", **kwargs):
    weights = [np.full((3, 2), epoch, np.float32), np.arange(4, dtype=np.float32)]
    return checkpoint.save(directory, {"model": model, "epoch": epoch, "history": []}, weights,
                           [np.array(epoch * 10, np.int64)], keep=keep, **kwargs)


def test_round_trip_and_keep_last_k(tmp_path):
    for epoch in range(1, 6):
        _save(tmp_path, epoch, keep=2)
    assert [p.name for p in checkpoint.candidates(tmp_path)] == ["ckpt-00005.npz", "ckpt-00004.npz"]
    found = checkpoint.latest_valid(tmp_path)
    assert found.epoch == 5 and found.model_weights[0][0, 0] == 5 and int(found.optimizer_variables[0]) == 50
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
