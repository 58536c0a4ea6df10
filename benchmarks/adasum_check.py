"""Does this Horovod build reduce with Adasum on CPU ranks? (issue 19, benchmarks/RESULTS.md)

    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 .venv/bin/python benchmarks/adasum_check.py

Rank 0 holds (1, 0) and rank 1 (0, 1): orthogonal gradients, which Adasum adds, (1, 1), where the
default average gives (0.5, 0.5). Rank 0 prints both and exits 1 if Adasum did not give (1, 1).
"""

import sys

import mnist_hpc  # noqa: F401 - first: tf.keras is Keras 2 (mnist_hpc/stack.py)
import horovod.tensorflow as hvd
import tensorflow as tf

hvd.init()
if hvd.size() != 2:
    sys.exit("error: run it on 2 ranks (mpirun -np 2)")
gradient = tf.constant([1.0, 0.0]) if hvd.rank() == 0 else tf.constant([0.0, 1.0])
adasum = hvd.allreduce(gradient, op=hvd.Adasum).numpy().tolist()
average = hvd.allreduce(gradient).numpy().tolist()
if hvd.rank() == 0:
    print(f"Adasum {adasum}, average {average}")
sys.exit(0 if adasum == [1.0, 1.0] else 1)
