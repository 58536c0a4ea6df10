"""callbacks.ProgressLine in a real 2-rank run: rank 0's one line per epoch, with a sensible ETA under
a step budget (the resumed run's first line: tests/integration/test_train.py)."""

from __future__ import annotations

import math
import re

import pytest

from conftest import launch, metrics_of

LINE = re.compile(r"^epoch (\d+)/(\d+): ([\d,]+) images/s, loss (\d+\.\d{4}), val accuracy (\d\.\d{4}), "
                  r"ETA (?:(\d+) m )?(\d+) s$")


@pytest.mark.parametrize("passes", [1, 2])
def test_rank_0_prints_one_line_per_epoch_with_speed_accuracy_and_eta(tmp_path, mnist_dir, passes):
    """--steps 500 on 2 ranks: 250 updates each (125 with 2 backward passes per update), 108 batches
    per epoch (54 updates of 2), so 3 epochs, the last one short. The ETA counts updates either way."""
    run_dir = tmp_path / "run"
    result = launch(2, "train", "--model", "simple", "--steps", "500", "--out", str(run_dir), "--resume", "never",
                    "--backward-passes-per-step", str(passes), "--data-dir", str(mnist_dir))
    history = metrics_of(run_dir)["history"]
    per_epoch, total = 108 // passes, 500 // (2 * passes)
    assert [h["steps"] for h in history] == [per_epoch, per_epoch, total - 2 * per_epoch]
    lines = [line for line in result.stdout.splitlines() if line.lower().startswith("epoch")]
    matches = [LINE.match(line) for line in lines]
    assert len(lines) == 3 and all(matches), result.stdout  # one line per epoch, from rank 0 only
    assert not re.search(r"^\d+/\d+ - |^Epoch \d", result.stdout, re.M), result.stdout  # no Keras epoch line
    done = 0
    for match, record in zip(matches, history):
        epoch, epochs, speed, loss, accuracy, minutes, seconds = match.groups()
        assert (int(epoch), int(epochs)) == (record["epoch"], 3)
        assert speed == f"{record['images_per_second']:,.0f}" and float(loss) == round(record["loss"], 4)
        assert float(accuracy) == round(record["val_accuracy"], 4)
        done += record["steps"]
        # the steps still to run at the median step time so far (epoch 2: the median of two is their mean)
        rates = sorted(h["seconds"] / h["steps"] for h in history[:record["epoch"]])
        median = (rates[(len(rates) - 1) // 2] + rates[len(rates) // 2]) / 2
        eta = int(minutes or 0) * 60 + int(seconds)
        assert math.isclose(eta, (total - done) * median, abs_tol=0.5 + 1e-9), (lines, history)
    assert lines[-1].endswith("ETA 0 s")
