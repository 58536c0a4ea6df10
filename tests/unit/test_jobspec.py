"""jobspec.py: hostile job options refused, arguments quoted, SLURM time formats; the sbatch template
rendered for every example site passes shellcheck."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from mnist_hpc import cli, jobspec

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


# ------------------------------------------------------------------ the template and the site examples
SITES = sorted((REPO / "slurm" / "sites").glob("*.toml"))


def render(*argv: str) -> str:
    """``mnist-hpc slurm render ARGV`` (in this process: 30 renders)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["slurm", "render", *argv]) == 0
    return out.getvalue()


def test_the_worked_examples_are_there():
    assert [p.name for p in SITES] == ["cpu-only.toml", "generic-pmix.toml", "gpu4.toml", "pmi2.toml"]


def test_the_pmi2_example_launches_with_srun_mpi_pmi2():
    script = render("train_cnn", "--site", str(REPO / "slurm" / "sites" / "pmi2.toml"))
    assert '\nsrun --mpi=pmi2 --kill-on-bad-exit=1 --cpu-bind=cores --cpus-per-task="$SLURM_CPUS_PER_TASK" ' in script
    assert "--mpi=pmix" not in script


def test_the_gpu_example_asks_for_4_gpus_per_node_and_binds_them():
    script = render("train_cnn", "--site", str(REPO / "slurm" / "sites" / "gpu4.toml"))
    for line in ("--gpus-per-node=4", "--ntasks-per-node=4", "--partition=gpu", "--cpus-per-task=8", "--mem=0",
                 "--exclusive", "--constraint=a100"):
        assert f"\n#SBATCH {line}\n" in script
    assert "\nsrun --mpi=pmix --kill-on-bad-exit=1 --cpu-bind=cores --gpu-bind=closest --cpus-per-task=" in script


@pytest.mark.parametrize("template", sorted(jobspec.TEMPLATES))
@pytest.mark.parametrize("site", [None, *SITES], ids=lambda s: s.stem if s else "no-site")
def test_shellcheck_passes_every_rendered_variant(template, site, tmp_path):
    """Each template x each example site (and none) x with and without GPUs: no shellcheck finding,
    at any severity (info and style included)."""
    scripts = []
    for gpus in ("0", "2"):
        path = tmp_path / f"{template}-{gpus}.sbatch"
        path.write_text(render(template, *(["--site", str(site)] if site else []), "--gpus-per-node", gpus))
        scripts.append(str(path))
    with_gpus, without = Path(scripts[1]).read_text(), Path(scripts[0]).read_text()
    assert "#SBATCH --gpus-per-node=2\n" in with_gpus and "#SBATCH --gpus-per-node=" not in without
    result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", *scripts], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_the_committed_scripts():
    scripts = [str(p) for p in sorted((REPO / "slurm").glob("*.sbatch"))] + [str(REPO / "slurm" / "scaling_sweep.sh")]
    result = subprocess.run(["shellcheck", "--severity=style", *scripts], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_file_has_no_unfilled_placeholder():
    for name in jobspec.TEMPLATES:
        assert "@@" not in jobspec.render_sbatch(name)
    with pytest.raises(KeyError):
        jobspec.fill("x @@MISSING@@ y\n", {})
