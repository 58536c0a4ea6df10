"""The command line against a live run: a second job on the same run directory is refused."""

import subprocess
import sys


from conftest import assert_one_line_error, cli, readline_within


def test_a_second_job_on_the_same_run_dir_is_refused(tmp_path, mnist_dir):
    """The lock is a flock held by a live rank 0; once that process is gone the directory is free. The holder
    holds it until the test closes its stdin (a state, not a time)."""
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys; from pathlib import Path; from mnist_hpc import rundir; "
                               "rundir.claim(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()",
                               str(tmp_path / "run")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert readline_within(holder.stdout, 60).strip() == "locked"
        result = cli("train", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "run"), "--epochs", "1")
        assert_one_line_error(result, "is in use by pid", str(holder.pid), "choose another --out")
    finally:
        holder.kill()  # a crash: the kernel drops the lock
        holder.wait()
    result = cli("train", "--model", "simple", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "run"),
                 "--epochs", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "metrics.json").stat().st_mode & 0o077 == 0o040 & 0o077  # 0640: no access for others
    for path in (tmp_path / "run").rglob("*"):
        assert path.stat().st_mode & 0o007 == 0, f"{path} is open to other users"
