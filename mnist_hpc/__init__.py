"""mnist-hpc: Horovod-distributed Keras training of the TensorFlow MNIST models."""

__version__ = "0.1.0"
