"""Exact aggregated evaluation: each rank scores its shard, ranks all-reduce SUMS.

Horovod's ``MetricAverageCallback`` averages per-rank means, which is wrong when shards differ in
size; here the correct-prediction count, the summed loss and the example count are summed over
ranks, so N ranks give exactly the numbers one process gives.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from . import checkpoint, data, distributed, export, models
from .exitcode import ExitCode


@dataclass(frozen=True)
class Scores:
    correct: int
    count: int
    loss_sum: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self) | {"accuracy": self.accuracy, "loss": self.loss}


def local_scores(model: tf.keras.Model, images: np.ndarray, labels: np.ndarray,
                 batch_size: int = 1000) -> tuple[int, float]:
    """(correct predictions, summed cross-entropy) of ``model`` on one rank's examples."""
    correct, loss_sum = 0, 0.0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size], training=False)
        logits = tf.cast(logits, tf.float32)
        batch_labels = labels[start:start + batch_size]
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(batch_labels, logits)
        correct += int(np.sum(np.argmax(logits.numpy(), axis=1) == batch_labels))
        loss_sum += float(np.sum(losses.numpy(), dtype=np.float64))
    return correct, loss_sum


def aggregated(model: tf.keras.Model, split: data.Split, world: distributed.World,
               name: str, extra: tuple[float, ...] = ()) -> tuple[Scores, np.ndarray]:
    """Scores of ``model`` on the whole ``split``, each rank evaluating its own shard.

    ``extra`` values are summed over ranks in the same all-reduce (votes the ranks must agree on:
    stop on a signal, stop on divergence) and returned as the second value.
    """
    shard = data.eval_shard(len(split), world.rank, world.size)
    correct, loss_sum = local_scores(model, split.images[shard], split.labels[shard])
    count = len(split.labels[shard])
    total = distributed.allreduce_sum([correct, loss_sum, count, *extra], name=name)
    return Scores(int(round(total[0])), int(round(total[2])), float(total[1])), total[3:]


def main(model_path: Path, data_dir: str | None = None, as_json: bool = False) -> int:
    """``mnist-hpc evaluate``: aggregated test scores of a saved model on every rank: the Keras 2
    ``model.keras`` or the SavedModel export (``RUN_DIR/saved_model``), as cli.evaluate_inputs found it;
    rank 0 prints them as one line, or (``as_json``) as one JSON object."""
    world = distributed.init()
    exported = export.is_export(model_path)
    try:
        model = export.Exported(model_path) if exported else tf.keras.models.load_model(model_path, compile=False)
    except Exception as err:  # a file that passed validation but is not this kind of model
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise checkpoint.CheckpointError(f"{model_path}: not a loadable {'SavedModel' if exported else 'Keras model'} "
                                         f"({type(err).__name__}: {first_line})") from None
    layout = models.layout_of(model)
    scores, _ = aggregated(model, data.load(data_dir, layout=layout).test, world, "evaluate_test")
    if world.is_root and as_json:
        print(json.dumps({"path": str(model_path), "accuracy": scores.accuracy, "correct": scores.correct,
                          "count": scores.count, "loss": scores.loss, "world_size": world.size}))
    elif world.is_root:
        print(f"{model_path}: test accuracy {scores.accuracy:.4f} ({scores.correct}/{scores.count}), "
              f"loss {scores.loss:.4f}, {world.size} rank(s)")
    return ExitCode.OK
