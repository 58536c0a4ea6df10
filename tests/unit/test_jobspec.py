"""jobspec.py: hostile job options refused, arguments quoted, SLURM time formats."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnist_hpc import jobspec

HOSTILE = ["$(touch {p}/dollar)", "`touch {p}/backtick`", "; touch {p}/semicolon", "x\ntouch {p}/newline",
           "'; touch {p}/quote; '", '"; touch {p}/dquote; "']


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_job_options_are_rejected_in_render_mode(value, tmp_path):
    value = value.format(p=tmp_path)
    for option in ("--job-name", "--partition", "--account", "--time"):
        result = subprocess.run([sys.executable, "-m", "mnist_hpc", "slurm", "render", "train_cnn", option, value],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and option in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_arguments_are_quoted_in_rendered_commands(tmp_path):
    spec = jobspec.JobSpec(("train", "--out", f"{tmp_path}/run $(touch {tmp_path}/x)"), python="python")
    line = spec.shell(spec.srun_command())
    subprocess.run(["bash", "-c", f"printf '%s\\n' {line.removeprefix('srun ')}"], check=True, capture_output=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(jobspec.JobSpecError, match="newlines"):
        jobspec.JobSpec(("train", "--out", "a\nb"))


@pytest.mark.parametrize("text,seconds", [("30", 1800), ("30:15", 1815), ("01:00:00", 3600), ("2-0", 172800),
                                          ("1-02:30", 95400), ("1-02:30:05", 95405), ("90", 5400)])
def test_slurm_time_formats(text, seconds):
    assert jobspec.parse_time(text) == seconds


@pytest.mark.parametrize("text", ["1:99", "1:60:00", "abc", "1h", "-5", "1-2-3", "", "1:2:3:4"])
def test_bad_slurm_times(text):
    with pytest.raises(jobspec.JobSpecError, match="--time"):
        jobspec.parse_time(text)
