"""``mnist-hpc doctor``: what this node's stack is, and whether it can train.

Imports TensorFlow and Horovod (it is run after the CLI has checked that Keras 2 will be
``tf.keras``); initialises neither Horovod nor MPI.
"""

from __future__ import annotations

import json

from . import stack


def horovod_build() -> dict[str, bool]:
    """What Horovod was built with (``horovodrun --check-build`` as data)."""
    import horovod.tensorflow as hvd

    return {"tensorflow": True, "mpi": hvd.mpi_built(), "gloo": hvd.gloo_built(), "nccl": hvd.nccl_built(),
            "cuda": hvd.cuda_built()}


def report() -> dict:
    import tensorflow as tf

    versions = stack.versions()
    _, keras_version = stack.keras_of(tf)
    return {"versions": versions, "keras2": keras_version.startswith("2."),
            stack.LEGACY_KERAS: stack.os.environ.get(stack.LEGACY_KERAS), "horovod_built": horovod_build()}


def text(found: dict) -> str:
    v = found["versions"]
    built = ", ".join(name for name, ok in found["horovod_built"].items() if ok)
    return "\n".join([
        f"python      {v['python']}",
        f"tensorflow  {v['tensorflow']}",
        f"keras       {v['keras']} ({'Keras 2' if found['keras2'] else 'Keras 3: NOT USABLE'}; "
        f"{stack.LEGACY_KERAS}={found[stack.LEGACY_KERAS]})",
        f"horovod     {v['horovod']} built with {built}",
        f"mpi         {v['mpi']}",
    ])


def main(as_json: bool) -> int:
    found = report()
    print(json.dumps(found, indent=2) if as_json else text(found))
    if not found["keras2"]:
        raise stack.StackError(f"tf.keras is {found['versions']['keras']}, not Keras 2")
    return 0
