"""Grad-CAM for a regression model: what makes the predicted size go up?

A small CNN learns to predict the object's size (its share of the image, in
percent) from the synthetic shapes, which also carry a distractor cross. The
callback explains the regression output, `targets=output()`, on 16 probe
images after every epoch; the grid captions show the predicted size against
the true one. The map should sit on the object, not on the cross or the
texture: the script prints the pointing game (share of maps whose peak falls
on the object) per epoch and on held-out images.

Run `python examples/regression_cam.py`, then `tensorboard --logdir runs/regression`.
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

# The sizes' mean and standard deviation over make_shapes' distribution, in percent.
MEAN_SIZE, SIZE_STD = 8.8, 3.4


def build_regressor(size: int) -> keras.Model:
    """Three conv blocks, global average pooling, one linear unit."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="features")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(1, name="size")(x), name="shapes_regressor")


def object_size(masks: np.ndarray) -> np.ndarray:
    """The object's share of the image in percent, standardised (mean 0, std 1 over the data).

    A standardised target lets the linear unit start where the sizes are.
    """
    percent = 100.0 * masks.mean(axis=(1, 2))
    return ((percent - MEAN_SIZE) / SIZE_STD).astype("float32")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--log-dir", default="runs/regression", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs")
    parser.add_argument("--train-size", type=int, default=1500, help="training images")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    args = parser.parse_args()
    import keras

    import keras_cam
    from keras_cam.data import make_shapes
    from keras_cam.targets.tasks import output

    keras.utils.set_random_seed(0)
    train = make_shapes(args.train_size, size=args.size, seed=1)
    test = make_shapes(64, size=args.size, seed=2)
    model = build_regressor(args.size)
    model.compile(keras.optimizers.Adam(2e-3), "mse", metrics=["mae"])
    callback = keras_cam.CAMCallback(
        (test.images[:16], object_size(test.masks[:16])),
        os.path.join(args.log_dir, "cam"),
        targets=output(),
        explain=keras_cam.ExplainOptions(layer="features"),
        watch=keras_cam.WatchOptions(probe_masks=test.masks[:16], metrics=("pointing_game",)),
    )
    started = time.perf_counter()
    history = model.fit(
        train.images,
        object_size(train.masks),
        validation_data=(test.images, object_size(test.masks)),
        epochs=args.epochs,
        batch_size=32,
        callbacks=[keras.callbacks.TensorBoard(args.log_dir), callback],
        verbose=0,
    )
    seconds = time.perf_counter() - started

    csv_path = os.path.join(args.log_dir, "cam", "cam_metrics.csv")
    pointing = [phase_means(csv_path, "pointing_game", range(e, e + 1)) for e in range(args.epochs)]
    print(f"trained {args.epochs} epochs in {seconds:.0f} s")
    maes = [SIZE_STD * v for v in history.history["val_mae"]]
    print("train MAE: " + " ".join(f"{SIZE_STD * v:.2f}" for v in history.history["mae"]))
    print("validation MAE (percent of the image) by epoch: " + " ".join(f"{v:.2f}" for v in maes))
    print("pointing game of the probe by epoch: " + " ".join(f"{p:.2f}" for p in pointing))
    result = keras_cam.explain(model, test.images, layer="features", targets=output())
    game = keras_cam.diagnostics.metrics.pointing_game(result.heatmaps, test.masks)
    area = float(test.masks.mean())
    print(
        f"held-out pointing game {game:.2f} (object area {area:.2f}: a random peak would hit "
        f"about that often); always predicting the mean size would give MAE "
        f"{SIZE_STD * np.abs(object_size(test.masks)).mean():.2f}"
    )
    print(f"tensorboard --logdir {os.path.abspath(args.log_dir)}")


if __name__ == "__main__":
    main()
