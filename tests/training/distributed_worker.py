"""Run by test_distributed.py in its own process: fit with CAMCallback under a distribution.

    python distributed_worker.py mirrored OUT          # tf.distribute.MirroredStrategy, 2 CPUs
    python distributed_worker.py multiworker OUT       # MultiWorkerMirroredStrategy (TF_CONFIG)

Keras 3's `fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585:
"Attempt to convert a value (PerReplica...)", also without this callback), so in that
mode the callback's hooks are driven directly, as `fit` would, inside the real cluster.
    python distributed_worker.py dataparallel OUT      # keras.distribution.DataParallel (JAX)

Writes the CAM logs under OUT/logs_<task>, the final weights to OUT/weights_<task>.npz and
the probe images to OUT/probe.npy.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def main(mode: str, out: str) -> None:
    task = 0
    if mode in ("mirrored", "multiworker"):
        import tensorflow as tf

        if mode == "mirrored":
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2
            )
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        else:
            task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        scope = strategy.scope()
    else:
        import keras

        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        import contextlib

        scope = contextlib.nullcontext()

    import keras
    from conftest import conv_classifier

    import keras_cam

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, size=32)
    with scope:
        model = conv_classifier()
        model.compile("adam", "sparse_categorical_crossentropy")
    callback = keras_cam.CAMCallback(
        x[:4],
        os.path.join(out, f"logs_{task}"),
        method=["gradcam", "scorecam"],
        view=keras_cam.ViewOptions(top_k=2, images="overlays", normalize="image"),
    )
    if mode == "multiworker":
        callback.set_model(model)
        callback.on_train_begin()
        for epoch in range(2):
            callback.on_epoch_end(epoch)
        callback.on_train_end()
    else:
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    np.save(os.path.join(out, "probe.npy"), x[:4])
    np.savez(os.path.join(out, f"weights_{task}.npz"), *model.get_weights())
    explained = callback.explainer is not None
    print(
        json.dumps(
            {
                "task": task,
                "explained": explained,
                "traces": callback.explainer.trace_count if explained else 0,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
