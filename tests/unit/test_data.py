"""data.py: reading, verifying, splitting and sharding the real MNIST files."""

import gzip
import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mnist_hpc import data
from mnist_hpc.exitcode import ExitCode


# ------------------------------------------------------------------ facts from shared/data/mnist/README.md
def test_split_sizes_and_types(mnist):
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (55_000, 5_000, 10_000)
    for split in (mnist.train, mnist.validation, mnist.test):
        assert split.images.dtype == np.float32 and split.images.shape[1:] == (28, 28, 1)
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        assert split.labels.dtype == np.int32 and set(np.unique(split.labels)) == set(range(10))


def test_known_facts(mnist_dir):
    raw = data.read_raw(mnist_dir)
    assert raw["y_train"][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(raw["y_train"]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(raw["y_test"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    pixels = raw["x_train"].astype(np.float64)
    assert pixels.mean() == pytest.approx(33.3184, abs=1e-4)
    assert pixels.std() == pytest.approx(78.5675, abs=1e-4)


def test_validation_is_the_first_5000_training_images(mnist, mnist_dir):
    raw = data.read_raw(mnist_dir)
    np.testing.assert_array_equal(mnist.validation.labels, raw["y_train"][:5000])
    np.testing.assert_array_equal(mnist.train.labels, raw["y_train"][5000:])
    np.testing.assert_array_equal(mnist.validation.images[..., 0], raw["x_train"][:5000] / np.float32(255))


def test_flat_layout(mnist_dir):
    flat = data.load(mnist_dir, layout="flat")
    assert flat.train.images.shape == (55_000, 784) and flat.test.images.shape == (10_000, 784)


# ------------------------------------------------------------------ formats
def test_raw_idx_and_npz_read_the_same(mnist_dir, tmp_path):
    from_gz = data.read_raw(mnist_dir)
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for f in mnist_dir.glob("*.gz"):
        (raw_dir / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    np.savez_compressed(npz_dir / "mnist.npz", **from_gz)
    for other in (data.read_raw(raw_dir), data.read_raw(npz_dir)):
        for key in from_gz:
            np.testing.assert_array_equal(other[key], from_gz[key])


def test_corrupted_npz_is_rejected(mnist_dir, tmp_path):
    arrays = data.read_raw(mnist_dir)
    arrays["y_test"] = arrays["y_test"].copy()
    arrays["y_test"][0] ^= 1
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(data.DataError, match="y_test"):
        data.read_raw(tmp_path)


def _flip_byte_in_gz(path, offset=5000):
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[offset] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(content)))


def test_flipped_byte_names_the_file(mnist_copy):
    _flip_byte_in_gz(mnist_copy / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz") as err:
        data.load(mnist_copy)
    assert "\n" not in str(err.value)


def test_truncated_gzip_names_the_file(mnist_copy):
    path = mnist_copy / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz"):
        data.load(mnist_copy)


def test_missing_data_tells_both_options(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load(tmp_path / "nothing")
    assert "mnist-hpc data fetch" in str(err.value) and "--data-dir" in str(err.value)


def test_location_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert data.resolve_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_dir(None) == tmp_path / "env"
    monkeypatch.delenv(data.ENV_VAR)
    assert data.resolve_dir(None) == data.DEFAULT_DIR.expanduser()


# ------------------------------------------------------------------ CLI verify
def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "mnist_hpc", *args], capture_output=True, text=True, **kwargs)


def test_cli_verify_good_flipped_and_missing(mnist_dir, mnist_copy, tmp_path):
    """Missing or damaged files are an input error, as for train --data-dir: 2 and one line."""
    assert _cli("data", "verify", "--dir", str(mnist_dir)).returncode == ExitCode.OK
    _flip_byte_in_gz(mnist_copy / "train-labels-idx1-ubyte.gz", offset=100)
    for folder, fragment in ((mnist_copy, "train-labels-idx1-ubyte.gz"), (tmp_path / "none", "MNIST not found")):
        bad = _cli("data", "verify", "--dir", str(folder))
        assert bad.returncode == ExitCode.USAGE, bad.stderr
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --dir: ") and fragment in lines[0], bad.stderr


# ------------------------------------------------------------------ downloader, against a real HTTP server
def test_fetch_with_only_bad_mirrors_leaves_nothing_behind(http_root, mnist_dir, tmp_path):
    root, base = http_root
    for f in mnist_dir.glob("*.gz"):
        shutil.copyfile(f, root / f.name)  # writable copies, whatever the mode of the originals
    _flip_byte_in_gz(root / "train-labels-idx1-ubyte.gz")
    target = tmp_path / "fetched"
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz"):
        data.fetch(target, mirrors=[f"{base}/missing/", f"{base}/"], log=lambda _: None)
    assert not (target / "train-labels-idx1-ubyte.gz").exists()
    assert not list(target.glob(".*part"))  # no half-written temp file


def test_fetch_accepts_the_mirrors_md5(http_root, tmp_path, monkeypatch):
    """A file whose compressed bytes have the served MD5 is accepted by that check alone."""
    root, base = http_root
    payload = b"served bytes"
    (root / "x.gz").write_bytes(payload)
    idx = data.IdxFile("x", (1,), "0" * 64, hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(data, "FILES", {"x": idx})
    monkeypatch.setattr(data, "verify", lambda d: d)
    data.fetch(tmp_path / "d", mirrors=[base], log=lambda _: None)
    assert (tmp_path / "d" / "x.gz").read_bytes() == payload


def test_cli_fetch_offline_is_a_one_line_runtime_failure(tmp_path):
    """No mirror reachable: the command could not do its work (1), the input was fine."""
    result = _cli("data", "fetch", "--dir", str(tmp_path / "d"), "--mirror", "http://127.0.0.1:9/")
    assert result.returncode == ExitCode.FAILED, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data fetch: could not fetch"), result.stderr


def test_progress_lines_come_every_tenth_or_every_second():
    """At most one line per further 10% of the Content-Length, or per second when the bytes come
    slowly (a clock the test advances; no real time involved)."""
    now = [0.0]
    lines = []
    progress = data.Progress("f.gz", 1000, lines.append, clock=lambda: now[0])
    for _ in range(20):  # 50 bytes at once, instantly: a line at each tenth
        progress.advance(50)
    assert lines == [f"f.gz: {n:,} / 1,000 bytes ({n // 10}%)" for n in range(100, 1001, 100)]
    lines.clear()
    slow = data.Progress("g.gz", 10_000, lines.append, clock=lambda: now[0])
    for _ in range(4):  # 10 bytes per 0.5 s: far below a tenth, so a line each second
        now[0] += 0.5
        slow.advance(10)
    assert lines == ["g.gz: 20 / 10,000 bytes (0%)", "g.gz: 40 / 10,000 bytes (0%)"]
    lines.clear()
    unknown = data.Progress("h.gz", None, lines.append, clock=lambda: now[0])
    unknown.advance(5)
    now[0] += 1
    unknown.advance(5)
    assert lines == ["h.gz: 10 bytes"]


def test_cli_fetch_reports_each_files_progress_on_stderr(http_root, mnist_dir, tmp_path):
    """Against a real HTTP server: per file, bytes so far / the Content-Length, then a final line;
    the result on stdout."""
    root, base = http_root
    for f in mnist_dir.glob("*.gz"):
        shutil.copy(f, root / f.name)
    target = tmp_path / "fetched"
    result = _cli("data", "fetch", "--dir", str(target), "--mirror", base, timeout=120)
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stdout == f"MNIST OK in {target}\n"
    lines = result.stderr.splitlines()
    for stem in data.FILES:
        name, size = f"{stem}.gz", (mnist_dir / f"{stem}.gz").stat().st_size
        shown = [line for line in lines if line.startswith(f"{name}: ")]
        done = [int(line.split(": ")[1].split(" / ")[0].replace(",", "")) for line in shown]
        assert shown and all(f" / {size:,} bytes (" in line for line in shown), (name, lines)
        assert done == sorted(set(done)) and done[-1] <= size, shown
        final = [line for line in lines if line.startswith(f"fetched {base}/{name}: {size:,} bytes in ")]
        assert len(final) == 1 and lines.index(final[0]) > lines.index(shown[-1]), lines
    # a tenth of the 9.9 MB training images at a time: at least 9 lines, whatever the speed
    assert len([line for line in lines if line.startswith("train-images-idx3-ubyte.gz: ")]) >= 9
    for f in mnist_dir.glob("*.gz"):
        assert (target / f.name).read_bytes() == f.read_bytes()


# ------------------------------------------------------------------ sharding
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_epoch_shards_partition_the_training_set(world_size):
    for epoch in (0, 1):
        shards = [data.epoch_shard(55_000, r, world_size, epoch, seed=7) for r in range(world_size)]
        joined = np.concatenate(shards)
        assert len(joined) == 55_000 and len(np.unique(joined)) == 55_000
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert not np.array_equal(data.epoch_shard(55_000, 0, world_size, 0, 7), data.epoch_shard(55_000, 0, world_size, 1, 7))
    np.testing.assert_array_equal(data.epoch_shard(55_000, 0, world_size, 3, 7), data.epoch_shard(55_000, 0, world_size, 3, 7))


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_eval_shards_partition(world_size):
    slices = [data.eval_shard(10_000, r, world_size) for r in range(world_size)]
    covered = np.concatenate([np.arange(10_000)[s] for s in slices])
    np.testing.assert_array_equal(covered, np.arange(10_000))
