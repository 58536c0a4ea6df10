"""Run identity on real trainings: a new directory without --out, a resume with other settings refused
with nothing written, and a longer budget resumed."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import REPO, metrics_of


def train(cwd: Path, mnist_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mnist_hpc", "train", "--model", "simple", "--data-dir", str(mnist_dir), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_has_its_own_directory_and_refuses_a_resume_with_other_settings(tmp_path, mnist_dir):
    # 1. no --out: a new directory under runs/simple/, named on the console, with the run's config beside it
    first = train(tmp_path, mnist_dir, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = Path(re.search(r"^run directory (\S+)$", first.stdout, re.M).group(1))
    assert run_dir.parent == (tmp_path / "runs" / "simple").resolve() and (run_dir / "metrics.json").is_file()
    settings = tomllib.loads((run_dir / "config.toml").read_text())
    assert settings["model"] == "simple" and settings["lr"] == 1.0 and settings["epochs"] == 1

    # 2. the same directory with another learning rate: one line naming both values, exit 2, nothing written
    before = snapshot(run_dir)
    refused = train(tmp_path, mnist_dir, "--epochs", "2", "--lr", "0.01", "--out", str(run_dir))
    errors = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-2000:]
    assert errors[0].startswith(f"error: {run_dir} holds a run with other settings: --lr 1.0 there, 0.01 now")
    assert snapshot(run_dir) == before

    # 3. a longer budget with the same settings resumes it
    resumed = train(tmp_path, mnist_dir, "--epochs", "2", "--out", str(run_dir))
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-2000:]
    assert [h["epoch"] for h in metrics_of(run_dir)["history"]] == [1, 2]
    assert tomllib.loads((run_dir / "config.toml").read_text())["epochs"] == 2

    # 4. a second run without --out does not touch the first
    second = train(tmp_path, mnist_dir, "--epochs", "1")
    assert second.returncode == 0
    assert re.search(r"^run directory (\S+)$", second.stdout, re.M).group(1) != str(run_dir)
    assert [h["epoch"] for h in metrics_of(run_dir)["history"]] == [1, 2]


def test_resume_never_into_a_directory_that_holds_a_run_is_refused(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    assert train(tmp_path, mnist_dir, "--epochs", "1", "--out", str(run_dir)).returncode == 0
    before = snapshot(run_dir)
    refused = train(tmp_path, mnist_dir, "--epochs", "1", "--out", str(run_dir), "--resume", "never")
    assert refused.returncode == 2 and "already holds a run" in refused.stderr, refused.stderr[-2000:]
    assert snapshot(run_dir) == before
