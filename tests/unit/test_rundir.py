"""rundir.py: the atomic folder write (atomic_dir) that the SavedModel export goes through."""

import os

import pytest

from mnist_hpc import rundir


def fill(folder, text):
    (folder / "sub").mkdir()
    (folder / "sub" / "file").write_text(text)
    (folder / "top").write_text(text)


def contents(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_is_written_then_replaced_whole_with_nothing_left_behind(tmp_path):
    target = tmp_path / "saved_model"
    with rundir.atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and not target.exists()
        fill(tmp, "one")
    assert contents(target) == {"sub/file": "one", "top": "one"}
    assert oct(target.stat().st_mode & 0o777) == "0o750"
    with rundir.atomic_dir(target) as tmp:
        fill(tmp, "two")
        assert contents(target) == {"sub/file": "one", "top": "one"}  # the old one until the block ends
    assert contents(target) == {"sub/file": "two", "top": "two"}
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]  # no temporary or set-aside folder


def test_a_failed_write_keeps_the_old_folder_and_names_the_target(tmp_path):
    target = tmp_path / "saved_model"
    with rundir.atomic_dir(target) as tmp:
        fill(tmp, "good")
    with pytest.raises(OSError) as err:
        with rundir.atomic_dir(target) as tmp:
            (tmp / "half").write_text("partial")
            raise OSError(28, "No space left on device", str(tmp / "half"))
    assert err.value.filename == str(target) and err.value.strerror == "No space left on device"
    with pytest.raises(ValueError):  # any other error passes through as it is
        with rundir.atomic_dir(target) as tmp:
            raise ValueError("a bug")
    assert contents(target) == {"sub/file": "good", "top": "good"}
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]


def test_the_old_folder_is_put_back_when_the_new_one_cannot_take_its_name(tmp_path, monkeypatch):
    target = tmp_path / "saved_model"
    with rundir.atomic_dir(target) as tmp:
        fill(tmp, "good")
    real_rename = os.rename

    def rename(source, destination):  # setting the old folder aside works; the new one's rename fails
        if ".old" not in str(destination) and str(source).startswith(str(tmp_path / ".saved_model.")) \
                and not str(source).endswith(".old"):
            raise OSError(5, "Input/output error")
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"):
        with rundir.atomic_dir(target) as tmp:
            fill(tmp, "new")
    assert contents(target) == {"sub/file": "good", "top": "good"}
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]
