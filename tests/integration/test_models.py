"""A third model, added the way the README says (one builder, one registry entry), trains end to end."""

import json
import subprocess
import sys

from conftest import REPO

NEWCOMER = """
import sys
sys.path.insert(0, sys.argv[3])
from mnist_hpc import cli, models
from unit.test_models import TINY  # the builder and the entry, nothing else

models.register(TINY)
status = cli.main(["train", "--model", "tiny", "--out", sys.argv[1], "--data-dir", sys.argv[2]])
sys.exit(status or cli.main(["evaluate", sys.argv[1], "--data-dir", sys.argv[2]]))
"""


def test_a_third_model_trains_checkpoints_and_evaluates(tmp_path, mnist_dir):
    run_dir = tmp_path / "tiny"
    result = subprocess.run([sys.executable, "-c", NEWCOMER, str(run_dir), str(mnist_dir), str(REPO / "tests")],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "tiny" and metrics["status"] == "completed" and metrics["epochs_completed"] == 2
    assert metrics["test_accuracy"] >= 0.9 and metrics["recipe_settings"]["lr"] == 3e-3
    assert metrics["horovod_environment"]["HOROVOD_CYCLE_TIME"] == "0.5"  # the entry's cycle time reached Horovod
    assert (run_dir / "checkpoints" / "ckpt-00002.npz").exists()
    assert f"tiny: test accuracy {metrics['test_accuracy']:.4f}" in result.stdout  # evaluate, on the saved model
