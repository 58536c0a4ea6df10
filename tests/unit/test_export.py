"""export.py: RUN_DIR/saved_model, the model for Keras 3 and plain TensorFlow (no ranks: one process)."""

import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_one_line_error, cli
from mnist_hpc import checkpoint, export, models


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """The softmax model with random (non-zero) weights, exported once: (model, export folder)."""
    model = models.build("simple")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    folder = tmp_path_factory.mktemp("run") / export.NAME
    export.write(model, folder)
    return model, folder


def test_the_export_predicts_exactly_what_the_keras2_model_predicts(trained_like):
    model, folder = trained_like
    images = np.random.default_rng(1).random((1000, 784), dtype=np.float32)
    exported = export.Exported(folder)
    assert np.array_equal(exported(images, training=False).numpy(), model(images, training=False).numpy())
    assert models.layout_of(exported) == "flat"  # from the input signature, as evaluate reads it
    assert export.is_export(folder) and not export.is_export(folder.parent)


def test_the_checksums_are_what_sha256sum_checks(trained_like):
    _, folder = trained_like
    listed = (folder / export.SUMS).read_text().splitlines()
    assert {line.split("  ", 1)[1] for line in listed} >= {"saved_model.pb", "variables/variables.index"}
    result = subprocess.run(["sha256sum", "--check", "--strict", export.SUMS], cwd=folder, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    export.verify(folder)


def damage(folder, how):
    data = folder / "variables" / "variables.data-00000-of-00001"
    if how == "flipped byte":
        content = bytearray(data.read_bytes())
        content[len(content) // 2] ^= 0xFF
        data.write_bytes(bytes(content))
    elif how == "truncated":
        data.write_bytes(data.read_bytes()[:100])
    elif how == "missing file":
        (folder / "variables" / "variables.index").unlink()
    else:  # no checksums: not written by mnist-hpc, or cut short
        (folder / export.SUMS).unlink()


@pytest.mark.parametrize("how,message", [
    ("flipped byte", "damaged SavedModel (variables/variables.data-00000-of-00001 does not match its SHA-256"),
    ("truncated", "damaged SavedModel (variables/variables.data-00000-of-00001 does not match its SHA-256"),
    ("missing file", "damaged SavedModel (variables/variables.index: No such file or directory)"),
    ("no checksums", "not an export of mnist-hpc (no readable SHA256SUMS"),
])
def test_a_damaged_export_is_refused_in_one_line_before_any_rank_starts(trained_like, tmp_path, mnist_dir, how,
                                                                        message):
    folder = shutil.copytree(trained_like[1], tmp_path / export.NAME)
    damage(folder, how)
    with pytest.raises(checkpoint.CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export.verify(folder)
    assert_one_line_error(cli("evaluate", str(folder), "--data-dir", str(mnist_dir)), f"{folder}: {message}")


def test_evaluate_names_the_three_things_it_reads(tmp_path, mnist_dir):
    (tmp_path / "run").mkdir()
    assert_one_line_error(cli("evaluate", str(tmp_path / "run"), "--data-dir", str(mnist_dir)),
                          f"evaluate: {tmp_path / 'run'} is neither a run directory with model.keras, a .keras model "
                          "file nor a SavedModel folder (RUN_DIR/saved_model)")


class FullDisk:
    """A model whose export fills the disk half-way, as TensorFlow reports it."""

    def export(self, path):
        (tf.io.gfile.GFile(f"{path}/saved_model.pb", "w")).write("partial")
        raise tf.errors.ResourceExhaustedError(None, None, f"{{{{function_node SaveV2}}}} {path}/variables/x.temp; "
                                               "No space left on device [Op:SaveV2]")


def test_a_full_disk_is_an_os_error_naming_the_export_and_keeps_the_old_one(trained_like, tmp_path):
    folder = shutil.copytree(trained_like[1], tmp_path / export.NAME)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(OSError) as err:
        export.write(FullDisk(), folder)
    assert err.value.filename == str(folder) and err.value.strerror == "No space left on device"
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == [export.NAME]
