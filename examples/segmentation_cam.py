"""Grad-CAM for a segmentation model: where does the model look to segment the object?

A small fully convolutional network learns to segment the synthetic shapes
from their textured background and the distractor cross (the object masks
are the labels). The callback explains the segmentation target, class
"object" summed over the pixels the model predicts as object, on 16 probe
images after every epoch; the grid shows the predicted mask's outline and a
caption with the image's mean IoU. The script prints the energy in mask
(share of the map on the true object) per epoch, then the held-out mean IoU
and energy in mask. While the model predicts no object pixel yet, the
target is empty and so is the map (energy 0).

Run `python examples/segmentation_cam.py`, then `tensorboard --logdir runs/segmentation`.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from shortcut_learning import phase_means

if TYPE_CHECKING:
    import keras

# Keras and keras_cam are imported where they are used, after the command line is parsed:
# `--help` answers at once.

OBJECT = 1


def build_segmenter(size: int) -> keras.Model:
    """Two conv blocks at half resolution, then per-pixel logits upsampled to full size."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="features")(x)
    x = layers.Conv2D(2, 1, name="logits")(x)
    outputs = layers.UpSampling2D(interpolation="bilinear", name="upsample")(x)
    return keras.Model(inputs, layers.Softmax(name="mask")(outputs), name="shapes_segmenter")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--log-dir", default="runs/segmentation", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs")
    parser.add_argument("--train-size", type=int, default=800, help="training images")
    parser.add_argument("--size", type=int, default=48, help="image side in pixels")
    args = parser.parse_args()
    import keras

    import keras_cam
    from keras_cam.data import make_shapes
    from keras_cam.targets.tasks import mean_iou, segmentation

    keras.utils.set_random_seed(0)
    train = make_shapes(args.train_size, size=args.size, seed=1)
    test = make_shapes(64, size=args.size, seed=2)
    model = build_segmenter(args.size)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    probe = (test.images[:16], test.masks[:16].astype("int32"))
    callback = keras_cam.CAMCallback(
        probe,
        os.path.join(args.log_dir, "cam"),
        targets=segmentation(OBJECT),
        class_names=["background", "object"],
        explain=keras_cam.ExplainOptions(layer="features"),
        watch=keras_cam.WatchOptions(probe_masks=test.masks[:16], metrics=("energy_in_mask",)),
    )
    started = time.perf_counter()
    model.fit(
        train.images,
        train.masks.astype("int32"),
        epochs=args.epochs,
        batch_size=32,
        callbacks=[keras.callbacks.TensorBoard(args.log_dir), callback],
        verbose=0,
    )
    seconds = time.perf_counter() - started

    csv_path = os.path.join(args.log_dir, "cam", "cam_metrics.csv")
    energies = [
        phase_means(csv_path, "energy_in_mask", range(e, e + 1)) for e in range(args.epochs)
    ]
    print(f"trained {args.epochs} epochs in {seconds:.0f} s")
    print(
        "energy in mask of the segmentation target, by epoch: "
        + " ".join(f"{e:.2f}" for e in energies)
    )
    result = keras_cam.explain(model, test.images, layer="features", targets=segmentation(OBJECT))
    ious = [mean_iou(p, m) for p, m in zip(result.predicted, test.masks, strict=True)]
    area = float(test.masks.mean())
    energy = keras_cam.diagnostics.metrics.energy_in_mask(result.heatmaps, test.masks)
    print(
        f"held-out: mean IoU {np.mean(ious):.2f}; energy in mask {energy:.2f} "
        f"(object area {area:.2f})"
    )
    print(f"tensorboard --logdir {os.path.abspath(args.log_dir)}")


if __name__ == "__main__":
    main()
