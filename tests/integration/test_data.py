"""data.fetch against a real HTTP server on 127.0.0.1: mirrors that 404 or serve corrupted files."""

import gzip
import hashlib
import shutil


from mnist_hpc import data


def _flip_byte_in_gz(path, offset=5000):
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[offset] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(content)))


def test_fetch_falls_back_over_404_and_corrupted_mirrors(http_root, mnist_dir, tmp_path):
    root, base = http_root
    (root / "empty").mkdir()  # every file 404s here
    corrupted, good = root / "corrupted", root / "good"
    for folder in (corrupted, good):
        folder.mkdir()
        for f in mnist_dir.glob("*.gz"):
            shutil.copy(f, folder / f.name)
    _flip_byte_in_gz(corrupted / "train-images-idx3-ubyte.gz")
    corrupted_labels = corrupted / "t10k-labels-idx1-ubyte.gz"
    corrupted_labels.write_bytes(corrupted_labels.read_bytes()[:-50])  # truncated
    target = tmp_path / "fetched"
    logged = []
    data.fetch(target, mirrors=[f"{base}/empty/", f"{base}/corrupted/", f"{base}/good/"], log=logged.append)
    assert sorted(p.name for p in target.iterdir()) == sorted(f.name for f in mnist_dir.glob("*.gz"))
    for f in target.iterdir():  # the corrupted mirror's files were rejected, the good ones kept
        assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256((mnist_dir / f.name).read_bytes()).digest()
    assert any("/good/train-images" in line for line in logged)
    assert any("/corrupted/train-labels" in line for line in logged)  # untouched files came from there


# ------------------------------------------------------------------ sharding
