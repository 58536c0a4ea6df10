"""mnist-hpc: Horovod-distributed Keras training of the TensorFlow MNIST models."""

from .stack import use_keras2

# Keras 2 (tf-keras) as tf.keras: TensorFlow reads TF_USE_LEGACY_KERAS when tf.keras is first
# used, and every entry point (the CLI, each rank under mpirun/srun, submitit's pickled callable,
# the benchmarks, the tests) imports this package before that. See stack.py for why.
use_keras2()

__version__ = "0.1.0"
