"""Which process of a distributed run writes the CAM events: the chief, and only it."""

from __future__ import annotations

import keras


def is_chief(model: keras.Model) -> bool:
    """True unless this process is a non-chief worker of a multi-process run.

    - TensorFlow: the `tf.distribute` strategy's cluster (`TF_CONFIG`): the
      `"chief"` task, or worker 0 when the cluster has no chief.
      Single-process strategies (`MirroredStrategy`) have one process: it writes.
    - JAX: process 0 of a multi-process `jax.distributed` run (Keras'
      distribution API); one process otherwise.
    - PyTorch: rank 0 of an initialised `torch.distributed` process group.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.process_index() == 0
    if backend == "torch":
        import torch.distributed

        initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
        return not initialised or torch.distributed.get_rank() == 0
    strategy = getattr(model, "distribute_strategy", None)
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster
